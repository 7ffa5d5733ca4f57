"""``otpguard audit``: the checklist on configurations, and probes of live loopback servers."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from otpguard import cli
from otpguard.audit import (
    Remote,
    Verdict,
    audit_remote,
    audit_settings,
    check_never_returned,
    guesses_per_day,
    max_in_window,
    response_leaks,
)
from otpguard.audit.checks import check_codes
from otpguard.audit.checks_policy import check_policy
from otpguard.codes import new_secret_hex
from otpguard.models import Channel
from otpguard.phone import DestinationPolicy, PhoneNumber, PolicyDecision

from .conftest import UK_MOBILE
from .test_https import make_tls_files, serve, settings_with_env

TWILIO_TOKEN = "twilio-token-" + "q" * 20
WEBHOOK_SECRET = "webhook-secret-" + "w" * 20
SMTP_PASSWORD = "smtp-password-" + "p" * 12


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("OTPGUARD_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def hardened(tmp_path: Path, tls: tuple[Path, Path, Path], **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "env": "production",
        "data_dir": str(tmp_path / "data"),
        "secret_keys": [new_secret_hex()],
        "transport": "twilio",
        "twilio_account_sid": "AC" + "1" * 32,
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_messaging_service_sid": "MG" + "2" * 32,
        "tls_certfile": str(tls[0]),
        "tls_keyfile": str(tls[1]),
        "alert_sinks": ["log", "webhook", "email"],
        "alert_webhook_url": "https://hooks.example.com/otpguard",
        "alert_webhook_secret": WEBHOOK_SECRET,
        "smtp_host": "smtp.example.com",
        "smtp_from": "otpguard@example.com",
        "smtp_to": ["oncall@example.com"],
        "smtp_user": "otpguard",
        "smtp_password": SMTP_PASSWORD,
        "audit_test_number": UK_MOBILE,
    }
    values.update(overrides)
    return values


def write_toml(path: Path, values: dict[str, Any], mode: int = 0o600) -> Path:
    lines = []
    for k, v in values.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(mode)
    return path


def by_id(findings: Any) -> dict[str, Any]:
    return {f.id: f for f in findings}


def audit(tmp_path: Path, tls: tuple[Path, Path, Path], **overrides: Any) -> dict[str, Any]:
    values = hardened(tmp_path, tls, **overrides)
    env = values.pop("env")
    return by_id(audit_settings(settings_with_env(tmp_path, env=env, **values)))


# -- the command -----------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_default_development_config_passes_with_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["audit"]) == 0
    out = capsys.readouterr().out
    assert "otpguard audit: development configuration" in out
    for item in ("codes.random", "codes.expiry", "limits.phone", "limits.ip", "storage.hmac"):
        assert f"PASS  {item}" in out or f"WARN  {item}" in out
    assert "WARN  https.enforced" in out
    assert "fix: in production, serve --certfile/--keyfile" in out
    assert "PASS  twilio.mode" in out
    assert "0 failed" in out
    assert not Path(".otpguard").exists()  # the audit writes nothing, not even a dev key


@pytest.mark.usefixtures("clean_env")
def test_hardened_production_config_passes_everything(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_toml(tmp_path / "otpguard.toml", hardened(tmp_path, tls_files))
    assert cli.main(["--config", str(config), "audit", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    not_passed = [c for c in report["checks"] if c["status"] != "PASS"]
    assert not_passed == []
    assert report["summary"] == {"pass": len(report["checks"]), "warn": 0, "fail": 0}


@pytest.mark.usefixtures("clean_env")
def test_production_without_https_fails_and_exits_non_zero(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    values = hardened(tmp_path, tls_files)
    del values["tls_certfile"], values["tls_keyfile"]
    config = write_toml(tmp_path / "otpguard.toml", values)
    assert cli.main(["--config", str(config), "audit"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  https.enforced" in out
    assert "FAIL  config.startup" in out
    assert "set OTPGUARD_TRUSTED_PROXIES" in out
    # The same configuration passes once serve's --certfile/--keyfile are given to the audit.
    args = ["--certfile", str(tls_files[0]), "--keyfile", str(tls_files[1])]
    assert cli.main(["--config", str(config), "audit", *args]) == 0


@pytest.mark.usefixtures("clean_env")
def test_json_output_lists_every_failure_with_a_fix(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    values = hardened(tmp_path, tls_files, limit_phone="off", trusted_proxies=["0.0.0.0/0"])
    config = write_toml(tmp_path / "otpguard.toml", values)
    assert cli.main(["--config", str(config), "audit", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    failed = {c["id"]: c for c in report["checks"] if c["status"] == "FAIL"}
    assert set(failed) == {"limits.phone", "https.proxies"}
    assert all(c["fix"] for c in failed.values())
    assert report["summary"]["fail"] == 2


@pytest.mark.usefixtures("clean_env")
def test_audit_output_never_shows_a_secret(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    values = hardened(tmp_path, tls_files, limit_ip="off")  # one FAIL, so fixes are printed too
    key = values["secret_keys"][0]
    config = write_toml(tmp_path / "otpguard.toml", values)
    cli.main(["--config", str(config), "audit"])
    cli.main(["--config", str(config), "audit", "--json"])
    out = capsys.readouterr()
    for secret in (key, TWILIO_TOKEN, WEBHOOK_SECRET, SMTP_PASSWORD):
        assert secret not in out.out + out.err


@pytest.mark.usefixtures("clean_env")
def test_a_config_file_readable_by_others_fails_in_production(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_toml(tmp_path / "otpguard.toml", hardened(tmp_path, tls_files), mode=0o644)
    assert cli.main(["--config", str(config), "audit"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  secrets.files" in out
    assert f"chmod 600 {config}" in out


# -- individual checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("windows", "span", "expected"),
    [
        ([(3, 600), (10, 86400)], 600, 3),
        ([(1, 60)], 600, 10),
        ([(1, 90)], 600, 7),
        ([(10, 86400)], 600, 10),
        ([], 600, None),
    ],
)
def test_max_in_window(windows: list[tuple[int, int]], span: int, expected: int | None) -> None:
    assert max_in_window(windows, span) == expected


@pytest.mark.parametrize(
    ("overrides", "item", "status"),
    [
        ({"code_ttl": 600}, "codes.expiry", Verdict.WARN),
        ({"code_ttl": 180}, "codes.expiry", Verdict.PASS),
        ({"max_attempts": 8}, "codes.attempts", Verdict.WARN),
        ({}, "codes.length", Verdict.PASS),  # 10 sends x 5 attempts a day: 1 in 20,000
        ({"limit_phone": "3/10m;30/24h"}, "codes.length", Verdict.WARN),  # 1 in 6,667
        ({"limit_phone": "100/10m", "limit_failed_checks": "off"}, "codes.length", Verdict.FAIL),
        ({"limit_phone": "off", "limit_failed_checks": "off"}, "codes.length", Verdict.FAIL),
        ({"limit_phone": "off", "code_length": 10}, "codes.length", Verdict.PASS),  # 240 checks/day
        ({"store": "mysql://x"}, "config.startup", Verdict.FAIL),
        ({"limit_phone": "5/10m"}, "limits.phone", Verdict.WARN),
        ({"limit_phone": "1/1m"}, "limits.phone", Verdict.WARN),
        ({"limit_phone": "off"}, "limits.phone", Verdict.FAIL),
        ({"limit_ip": "off"}, "limits.ip", Verdict.FAIL),
        ({"limit_network": "off"}, "limits.ip", Verdict.WARN),
        ({"limit_ipv6_48": "off"}, "limits.ip", Verdict.WARN),
        ({"limit_failed_checks": "off"}, "limits.checks", Verdict.WARN),
        ({"admission_global": "off", "limit_global": "off"}, "limits.global", Verdict.WARN),
        ({"secret_keys": ["00" * 32]}, "storage.hmac", Verdict.FAIL),
        ({"secret_keys": ["0123456789abcdef" * 4]}, "storage.hmac", Verdict.FAIL),
        ({"secret_keys": []}, "storage.hmac", Verdict.FAIL),
        ({"tag_form": 1}, "storage.tag_form", Verdict.WARN),
        ({"trusted_proxies": ["10.0.0.0/8"]}, "https.proxies", Verdict.PASS),
        ({"trusted_proxies": ["0.0.0.0/0"]}, "https.proxies", Verdict.FAIL),
        ({"trusted_proxies": ["::/0"]}, "https.proxies", Verdict.FAIL),
        ({"tls_keyfile": "/nonexistent/key.pem"}, "https.enforced", Verdict.FAIL),
        ({"allowed_countries": []}, "policy.countries", Verdict.WARN),
        ({"allowed_countries": ["GB", "US", "FR"]}, "policy.premium_rate", Verdict.PASS),
        ({"twilio_test_credentials": True}, "twilio.mode", Verdict.FAIL),
        ({"twilio_auth_token": ""}, "twilio.mode", Verdict.FAIL),
        ({"transport": "console"}, "twilio.mode", Verdict.FAIL),
        ({"alert_sinks": ["log"]}, "monitoring.alerts", Verdict.WARN),
        ({"alert_sinks": []}, "monitoring.alerts", Verdict.FAIL),
        ({"alert_webhook_url": ""}, "monitoring.alerts", Verdict.FAIL),
        ({"log_events": False}, "monitoring.tracking", Verdict.WARN),
        ({"env": "development", "transport": "console"}, "twilio.mode", Verdict.PASS),
        ({"env": "development", "twilio_test_credentials": True}, "twilio.mode", Verdict.PASS),
        ({"env": "development"}, "twilio.mode", Verdict.WARN),
        ({"env": "development"}, "https.enforced", Verdict.WARN),
    ],
)
def test_check(
    tmp_path: Path,
    tls_files: tuple[Path, Path, Path],
    overrides: dict[str, Any],
    item: str,
    status: Verdict,
) -> None:
    finding = audit(tmp_path, tls_files, **overrides)[item]
    assert finding.status is status, finding
    assert bool(finding.fix) == (status is not Verdict.PASS)


def test_guesses_per_day_takes_the_lower_cap(tmp_path: Path) -> None:
    assert guesses_per_day(settings_with_env(tmp_path)) == 50  # 10 sends x 5 attempts
    few_checks = settings_with_env(tmp_path, limit_failed_checks="20/24h")
    assert guesses_per_day(few_checks) == 20
    assert (
        guesses_per_day(settings_with_env(tmp_path, limit_phone="off", limit_failed_checks="off"))
        is None
    )


def test_biased_codes_fail_the_randomness_check(tmp_path: Path) -> None:
    """A generator that never draws a 9 is caught by the digit frequencies."""
    settings = settings_with_env(tmp_path)
    fair = by_id(check_codes(settings))["codes.random"]
    skewed = by_id(
        check_codes(
            settings, generate=lambda n: "".join(secrets.choice("012345678") for _ in range(n))
        )
    )["codes.random"]
    assert fair.status is Verdict.PASS
    assert skewed.status is Verdict.FAIL and "frequencies" in skewed.detail


class _Leaky(BaseModel):
    verification_id: str
    otp_code: str


def test_a_code_like_response_field_fails_never_returned() -> None:
    router = APIRouter()

    @router.get("/leaky", response_model=_Leaky)
    async def leaky() -> dict[str, str]:
        return {}

    (finding,) = check_never_returned([router])
    assert finding.status is Verdict.FAIL and "/leaky otp_code" in finding.detail
    (real,) = check_never_returned()
    assert real.status is Verdict.PASS
    (empty,) = check_never_returned([APIRouter()])
    assert empty.status is Verdict.FAIL  # nothing scanned is not a pass


class _Permissive(DestinationPolicy):
    def decide(self, number: PhoneNumber, channel: Channel) -> PolicyDecision:
        return PolicyDecision(True)


def test_a_policy_that_lets_premium_numbers_through_fails(tmp_path: Path) -> None:
    settings = settings_with_env(tmp_path, allowed_countries=["GB"])
    permissive = _Permissive.from_settings(settings)
    finding = by_id(check_policy(settings, permissive))["policy.premium_rate"]
    assert finding.status is Verdict.FAIL and "premium_rate GB via sms" in finding.detail


def test_premium_rate_probe_really_probes(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    finding = audit(tmp_path, tls_files, allowed_countries=["GB", "US", "FR"])[
        "policy.premium_rate"
    ]
    probed = int(finding.detail.split("(")[1].split(" ")[0])
    assert probed >= 3


def test_a_development_key_on_disk_is_judged(tmp_path: Path, tls_files: Any) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_text("ab" * 32 + "\n")
    settings = settings_with_env(tmp_path, env="development", secret_keys=[])
    findings = by_id(audit_settings(settings))
    assert findings["storage.hmac"].status is Verdict.FAIL  # "abab...": two distinct bytes
    (data / "secret.key").write_text(new_secret_hex() + "\n")
    (data / "secret.key").chmod(0o640)
    findings = by_id(audit_settings(settings))
    assert findings["storage.hmac"].status is Verdict.PASS
    assert findings["secrets.files"].status is Verdict.WARN


# -- scanning responses ---------------------------------------------------------------------


def _response(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(201, json=body, headers=headers or {})


SAFE = {
    "id": "VE0123456789abcdef0123456789abcdef",
    "to": "+44******3456",
    "channel": "sms",
    "status": "pending",
    "created_at": "2027-01-15T08:00:00Z",
    "expires_at": "2027-01-15T08:05:00Z",
    "resend_available_at": "2027-01-15T08:00:30Z",
    "attempts_remaining": 5,
    "sends": 1,
}


def test_a_clean_verification_response_has_no_leak() -> None:
    assert response_leaks(_response(SAFE)) == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({**SAFE, "code": "048213"}, "code"),
        ({**SAFE, "otp": 48213}, "otp"),
        ({**SAFE, "debug": {"message": "sent 482913 to +44..."}}, "debug.message"),
        ({**SAFE, "verification_code": "4829-13"}, "verification_code"),
    ],
)
def test_code_like_fields_are_found(body: dict[str, Any], where: str) -> None:
    assert response_leaks(_response(body)) == [where]


def test_a_code_in_a_header_is_found() -> None:
    r = _response(SAFE, {"X-Debug-Code": "482913"})
    assert response_leaks(r) == ["header x-debug-code"]


def test_the_sent_code_is_found_anywhere_when_known() -> None:
    r = _response({**SAFE, "note": "ref 12482913000000"})
    assert response_leaks(r) == []  # too long to be a code on its own
    assert response_leaks(r, code="482913") == ["body"]


# -- probing live servers --------------------------------------------------------------------


def _prod_server(tmp_path: Path, tls: tuple[Path, Path, Path], **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "env": "production",
        "transport": "twilio",
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": "t" * 32,
        "twilio_from": "+447400000001",
        "store": f"sqlite:///{tmp_path / 'audit.db'}",
        "tls_certfile": tls[0],
        "tls_keyfile": tls[1],
        "trusted_proxies": ["10.0.0.0/8"],
    }
    values.update(overrides)
    return serve(settings_with_env(tmp_path, **values), tls)


def test_remote_probe_of_a_hardened_server_passes(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    import asyncio
    import ssl

    with _prod_server(tmp_path, tls_files) as srv:
        remote = Remote(
            url=srv.https_url,
            api_key=srv.key,
            http_url=srv.http_url,
            verify=ssl.create_default_context(cafile=str(tls_files[2])),
            test_number=UK_MOBILE,
        )
        findings = by_id(asyncio.run(audit_remote(remote)))
        sent = srv.outbox.sent_to(UK_MOBILE)
    assert {f: v.status for f, v in findings.items()} == {
        "remote.tls": Verdict.PASS,
        "remote.hsts": Verdict.PASS,
        "remote.headers": Verdict.PASS,
        "remote.plain_http": Verdict.PASS,
        "remote.auth": Verdict.PASS,
        "remote.code_never_returned": Verdict.PASS,
    }
    assert "403 https_required" in findings["remote.plain_http"].detail
    assert len(sent) == 1  # the probe really started a verification


@pytest.mark.usefixtures("clean_env")
def test_cli_remote_probe_end_to_end(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_toml(tmp_path / "otpguard.toml", hardened(tmp_path, tls_files))
    with _prod_server(tmp_path, tls_files) as srv:
        key_file = tmp_path / "api.key"
        key_file.write_text(srv.key + "\n")
        argv = ["--config", str(config), "audit", "--url", srv.https_url]
        argv += ["--cacert", str(tls_files[2]), "--api-key-file", str(key_file)]
        code = cli.main(argv)  # plain HTTP probed on the TLS port itself: nothing answers
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS  remote.code_never_returned" in out
    assert "PASS  remote.plain_http" in out
    assert srv.key not in out


def test_remote_probe_of_a_development_server_fails_plain_http(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    import asyncio
    import ssl

    with _prod_server(tmp_path, tls_files, env="development", transport="memory") as srv:
        ctx = ssl.create_default_context(cafile=str(tls_files[2]))
        secure = Remote(srv.https_url, None, http_url=srv.http_url, verify=ctx)
        findings = by_id(asyncio.run(audit_remote(secure)))
        plain = by_id(asyncio.run(audit_remote(Remote(srv.http_url, srv.key))))
    assert findings["remote.plain_http"].status is Verdict.FAIL
    assert findings["remote.code_never_returned"].status is Verdict.WARN  # no API key given
    assert plain["remote.tls"].status is Verdict.FAIL


def test_a_refused_probe_is_a_warning_not_a_pass(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    import asyncio
    import ssl

    with _prod_server(tmp_path, tls_files) as srv:
        ctx = ssl.create_default_context(cafile=str(tls_files[2]))
        remote = Remote(srv.https_url, srv.key, http_url=srv.http_url, verify=ctx)  # magic number
        finding = by_id(asyncio.run(audit_remote(remote)))["remote.code_never_returned"]
    assert finding.status is Verdict.WARN
    assert "destination_refused" in finding.detail
    assert "OTPGUARD_AUDIT_TEST_NUMBER" in finding.fix
