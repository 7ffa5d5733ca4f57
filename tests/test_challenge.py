"""The challenge step's verifier against a fake siteverify server on 127.0.0.1, and its
settings: success, failure, reuse, timeout, provider down, nothing secret in a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpguard.challenge import (
    MAX_TOKEN_LENGTH,
    VERIFY_URLS,
    ChallengeVerifier,
    challenge_problems,
    token_fingerprint,
)
from otpguard.config import load_settings
from otpguard.errors import ChallengeUnavailable, ConfigError
from otpguard.startup import check_startup

from .conftest import make_settings
from .fake_siteverify import SECRET, SITE_KEY, FakeSiteverify, fake_siteverify

__all__ = ["fake_siteverify"]  # the fixture, re-exported for pytest


def verifier_for(fake: FakeSiteverify, tmp_path: Path, **extra: object) -> ChallengeVerifier:
    v = ChallengeVerifier.from_section(make_settings(tmp_path, **fake.settings(**extra)).challenge)
    assert v is not None
    return v


async def test_a_good_token_passes_and_the_wire_format_is_siteverify(
    fake_siteverify: FakeSiteverify, tmp_path: Path
) -> None:
    v = verifier_for(fake_siteverify, tmp_path)
    token = fake_siteverify.issue()
    try:
        assert await v.verify(token, "203.0.113.7") is True
    finally:
        await v.aclose()
    [req] = fake_siteverify.requests
    assert req.path == "/siteverify"
    assert req.content_type.startswith("application/x-www-form-urlencoded")
    assert req.form == {"secret": SECRET, "response": token, "remoteip": "203.0.113.7"}
    assert v.describe() == {"provider": "turnstile", "site_key": SITE_KEY}
    assert v.mode == "pressure"


async def test_remoteip_is_left_out_when_unknown(
    fake_siteverify: FakeSiteverify, tmp_path: Path
) -> None:
    v = verifier_for(fake_siteverify, tmp_path)
    try:
        assert await v.verify(fake_siteverify.issue(), None) is True
        assert await v.verify(fake_siteverify.issue(), "unknown") is True
    finally:
        await v.aclose()
    assert [set(r.form) for r in fake_siteverify.requests] == [{"secret", "response"}] * 2


async def test_a_token_the_provider_never_issued_fails(
    fake_siteverify: FakeSiteverify, tmp_path: Path
) -> None:
    v = verifier_for(fake_siteverify, tmp_path)
    try:
        assert await v.verify("XXXX.FAKE.made-up-by-a-bot", "203.0.113.7") is False
    finally:
        await v.aclose()
    assert len(fake_siteverify.requests) == 1


async def test_a_token_is_good_once(fake_siteverify: FakeSiteverify, tmp_path: Path) -> None:
    v = verifier_for(fake_siteverify, tmp_path)
    token = fake_siteverify.issue()
    try:
        assert await v.verify(token, None) is True
        assert await v.verify(token, None) is False  # timeout-or-duplicate
    finally:
        await v.aclose()
    assert token_fingerprint(token) == token_fingerprint(token)
    assert token_fingerprint(token) != token_fingerprint(fake_siteverify.issue())
    assert token not in token_fingerprint(token) and len(token_fingerprint(token)) == 64


async def test_malformed_tokens_are_refused_without_asking(
    fake_siteverify: FakeSiteverify, tmp_path: Path
) -> None:
    v = verifier_for(fake_siteverify, tmp_path)
    too_long = "a" * (MAX_TOKEN_LENGTH["turnstile"] + 1)
    try:
        for token in ["", too_long, "has spaces", "new\nline", "é" * 10]:
            assert await v.verify(token, None) is False, token[:20]
    finally:
        await v.aclose()
    assert fake_siteverify.requests == []


async def test_a_slow_provider_times_out_closed(
    fake_siteverify: FakeSiteverify, tmp_path: Path
) -> None:
    fake_siteverify.mode = "slow"  # holds the request; the client gives up at its timeout
    v = verifier_for(fake_siteverify, tmp_path, challenge_timeout=0.2)
    try:
        with pytest.raises(ChallengeUnavailable, match=r"did not answer within 0\.2 s"):
            await v.verify(fake_siteverify.issue(), None)
    finally:
        fake_siteverify.release()
        await v.aclose()
    assert ChallengeUnavailable.status == 503


@pytest.mark.parametrize("fault", ["down", "error", "garbage"])
async def test_a_provider_that_is_down_or_broken_fails_closed(
    fake_siteverify: FakeSiteverify, tmp_path: Path, fault: str
) -> None:
    if fault == "down":
        extra = {"challenge_verify_url": FakeSiteverify.down_url()}
    else:
        fake_siteverify.mode = fault  # type: ignore[assignment]
        extra = {}
    v = verifier_for(fake_siteverify, tmp_path, **extra)
    try:
        with pytest.raises(ChallengeUnavailable):
            await v.verify(fake_siteverify.issue(), None)
    finally:
        await v.aclose()


async def test_a_wrong_secret_is_our_fault_not_the_users(
    fake_siteverify: FakeSiteverify, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v = verifier_for(fake_siteverify, tmp_path, challenge_secret="0x-not-the-secret")
    try:
        with pytest.raises(ChallengeUnavailable):
            await v.verify(fake_siteverify.issue(), None)
    finally:
        await v.aclose()
    assert "invalid-input-secret" in caplog.text and "OTPGUARD_CHALLENGE_SECRET" in caplog.text


async def test_the_secret_and_tokens_are_never_logged_or_shown(
    fake_siteverify: FakeSiteverify, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = [fake_siteverify.issue() for _ in range(4)]
    shown: list[str] = []
    v = verifier_for(fake_siteverify, tmp_path, challenge_timeout=0.2)
    try:
        await v.verify(tokens[0], "203.0.113.7")  # success
        await v.verify(tokens[0], "203.0.113.7")  # reuse
        await v.verify("XXXX.FAKE.unknown-token", None)  # failure
        for mode in ("slow", "error", "garbage"):
            fake_siteverify.mode = mode  # type: ignore[assignment]
            with pytest.raises(ChallengeUnavailable) as caught:
                await v.verify(tokens[1], None)
            shown += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
            fake_siteverify.release()
    finally:
        await v.aclose()
    settings = make_settings(tmp_path, **fake_siteverify.settings())
    shown += [repr(v), repr(settings), str(settings.redacted())]
    text = caplog.text + "\n".join(shown)
    assert SECRET not in text
    for token in [*tokens, "XXXX.FAKE.unknown-token"]:
        assert token not in text
    assert "turnstile" in caplog.text  # the logs do say what happened


# -- settings -------------------------------------------------------------------------


def test_off_by_default_and_each_provider_has_its_own_url(tmp_path: Path) -> None:
    assert ChallengeVerifier.from_section(make_settings(tmp_path).challenge) is None
    assert VERIFY_URLS == {
        "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        "hcaptcha": "https://api.hcaptcha.com/siteverify",
        "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
    }
    for provider, url in VERIFY_URLS.items():
        settings = make_settings(
            tmp_path,
            challenge_provider=provider,
            challenge_site_key=SITE_KEY,
            challenge_secret=SECRET,
            challenge_mode="always",
        )
        v = ChallengeVerifier.from_section(settings.challenge)
        assert v is not None and v.verify_url == url and v.mode == "always"


def test_read_from_the_environment(tmp_path: Path) -> None:
    env = {
        "OTPGUARD_CHALLENGE_PROVIDER": "hcaptcha",
        "OTPGUARD_CHALLENGE_SITE_KEY": "10000000-ffff-ffff-ffff-000000000001",
        "OTPGUARD_CHALLENGE_SECRET": SECRET,
        "OTPGUARD_CHALLENGE_VERIFY_URL": "http://127.0.0.1:9/siteverify",
        "OTPGUARD_CHALLENGE_MODE": "always",
        "OTPGUARD_CHALLENGE_TIMEOUT": "1.5",
    }
    settings = load_settings(env=env, data_dir=tmp_path)
    assert settings.challenge_provider == "hcaptcha" and settings.challenge_timeout == 1.5
    assert SECRET not in repr(settings)
    assert challenge_problems(settings.challenge) == []
    with pytest.raises(ConfigError, match="OTPGUARD_CHALLENGE_MODE"):
        load_settings(env={**env, "OTPGUARD_CHALLENGE_MODE": "sometimes"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="OTPGUARD_CHALLENGE_PROVIDER"):
        load_settings(env={**env, "OTPGUARD_CHALLENGE_PROVIDER": "captchaco"}, data_dir=tmp_path)


def test_a_provider_without_keys_names_every_problem_at_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, challenge_provider="turnstile")
    with pytest.raises(ConfigError) as caught:
        check_startup(settings)
    message = caught.value.message
    assert "OTPGUARD_CHALLENGE_SITE_KEY is not set" in message
    assert "OTPGUARD_CHALLENGE_SECRET is not set" in message
    with pytest.raises(ConfigError, match="OTPGUARD_CHALLENGE_SITE_KEY"):
        ChallengeVerifier.from_section(settings.challenge)


def test_settings_that_do_nothing_while_off_are_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, challenge_secret=SECRET, challenge_mode="always")
    [problem] = challenge_problems(settings.challenge)
    assert "OTPGUARD_CHALLENGE_SECRET" in problem and "OTPGUARD_CHALLENGE_MODE=always" in problem
    assert SECRET not in problem


@pytest.mark.parametrize(
    ("url", "production", "problem"),
    [
        ("ftp://captcha.example/siteverify", False, "not an http(s) URL"),
        ("https:///siteverify", False, "not an http(s) URL"),
        ("https://user:pw@captcha.example/siteverify", False, "must not hold credentials"),
        ("http://captcha.example/siteverify", True, "must be https in production"),
        ("http://captcha.example/siteverify", False, None),  # development: a local sidecar
        ("http://127.0.0.1:8080/siteverify", True, None),  # loopback: the secret stays here
        ("http://[::1]:8080/siteverify", True, None),
        ("https://captcha.example/siteverify", True, None),
    ],
)
def test_verify_url_rules(tmp_path: Path, url: str, production: bool, problem: str | None) -> None:
    extra = {"env": "production"} if production else {}
    settings = make_settings(
        tmp_path,
        challenge_provider="recaptcha",
        challenge_site_key=SITE_KEY,
        challenge_secret=SECRET,
        challenge_verify_url=url,
        **extra,
    )
    problems = challenge_problems(settings.challenge)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_production_names_challenge_problems_with_the_others(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production", challenge_provider="turnstile")
    with pytest.raises(ConfigError) as caught:
        check_startup(settings)
    assert "refusing to start in production" in caught.value.message
    assert "OTPGUARD_TRANSPORT" in caught.value.message
    assert "OTPGUARD_CHALLENGE_SITE_KEY" in caught.value.message
