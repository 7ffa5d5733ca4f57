"""Settings: sources, validation with messages that say what to fix, production refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from otpguard.codes import new_secret_hex
from otpguard.config import load_settings, parse_windows
from otpguard.errors import ConfigError
from otpguard.startup import check_startup, production_problems, startup_problems


def test_defaults() -> None:
    s = load_settings(env={})
    assert (s.env, s.code_length, s.code_ttl, s.max_attempts, s.resend_cooldown) == (
        "development",
        6,
        300,
        5,
        30,
    )
    assert s.transport == "console" and s.allowed_countries == ["GB"]
    assert s.limits.phone == ((3, 600), (10, 86400))
    assert s.store_url.startswith("sqlite:///") and s.store_url.endswith("otpguard.db")


def test_env_and_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "otpguard.toml"
    cfg.write_text('code_length = 8\nallowed_countries = ["GB", "JE"]\nservice_name = "Acme"\n')
    s = load_settings(
        env={
            "OTPGUARD_CONFIG": str(cfg),
            "OTPGUARD_SERVICE_NAME": "Beta",
            "OTPGUARD_ALLOWED_COUNTRIES": "gb, gg",
            "TWILIO_ACCOUNT_SID": "AC123",
        }
    )
    assert s.code_length == 8  # from the file
    assert s.service_name == "Beta"  # the environment wins
    assert s.allowed_countries == ["GB", "GG"]
    assert s.twilio_account_sid == "AC123"  # the SDK's own variable name


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"OTPGUARD_CODE_LENGTH": "5"}, "OTPGUARD_CODE_LENGTH"),
        ({"OTPGUARD_CODE_LENGTH": "11"}, "OTPGUARD_CODE_LENGTH"),
        ({"OTPGUARD_CODE_TTL": "601"}, "OTPGUARD_CODE_TTL"),
        ({"OTPGUARD_CODE_TTL": "30"}, "OTPGUARD_CODE_TTL"),
        ({"OTPGUARD_ENV": "staging"}, "OTPGUARD_ENV"),
        ({"OTPGUARD_TRANSPORT": "pigeon"}, "OTPGUARD_TRANSPORT"),
        ({"OTPGUARD_LIMIT_PHONE": "three per minute"}, "LIMIT/WINDOW"),
        ({"OTPGUARD_ALLOWED_COUNTRIES": "GBR"}, "alpha-2"),
        ({"OTPGUARD_ALLOWED_COUNTRIES": "GB,UK"}, "'UK' is not an ISO 3166-1 code: write GB"),
        ({"OTPGUARD_ALLOWED_COUNTRIES": "XX"}, "'XX' is not an ISO 3166-1 alpha-2"),
        ({"OTPGUARD_DEFAULT_REGION": "UK"}, "OTPGUARD_DEFAULT_REGION: 'UK' is not an ISO"),
        ({"OTPGUARD_TRUSTED_PROXIES": "10.0.0.0/33"}, "IP network"),
        ({"OTPGUARD_CODE_LENGHT": "8"}, "unknown setting"),
        ({"OTPGUARD_ALERT_SINKS": "log,pager"}, "unknown alert sink"),
    ],
)
def test_invalid_settings_say_what_to_fix(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env=env)
    assert fragment in exc.value.message


def test_bad_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"OTPGUARD_CONFIG": str(tmp_path / "nope.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("code_length = = 8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={"OTPGUARD_CONFIG": str(bad)})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'")
    with pytest.raises(ConfigError, match="colour"):
        load_settings(env={"OTPGUARD_CONFIG": str(unknown)})


def test_parse_windows() -> None:
    assert parse_windows("3/10m;10/24h") == [(3, 600), (10, 86400)]
    assert parse_windows("100/m") == [(100, 60)]
    assert parse_windows("off") == [] and parse_windows("") == []
    with pytest.raises(ValueError):
        parse_windows("3/0m")


def test_production_refuses_unsafe_settings() -> None:
    s = load_settings(env={"OTPGUARD_ENV": "production"})
    problems = "\n".join(production_problems(s))
    assert "OTPGUARD_SECRET_KEYS" in problems
    assert "OTPGUARD_TRANSPORT=console" in problems
    assert "HTTPS" in problems
    with pytest.raises(ConfigError, match="refusing to start in production"):
        check_startup(s)


def test_production_refuses_test_credentials_and_weak_keys() -> None:
    s = load_settings(
        env={
            "OTPGUARD_ENV": "production",
            "OTPGUARD_SECRET_KEYS": "00" * 16,
            "OTPGUARD_TRANSPORT": "twilio",
            "OTPGUARD_TWILIO_TEST_CREDENTIALS": "true",
            "OTPGUARD_TRUSTED_PROXIES": "10.0.0.0/8",
        }
    )
    problems = "\n".join(startup_problems(s))
    assert "at least 32" in problems and "TEST_CREDENTIALS" in problems


def test_development_creates_and_keeps_a_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s1 = check_startup(load_settings(env={"OTPGUARD_DATA_DIR": str(data)}))
    key_file = data / "secret.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    s2 = check_startup(load_settings(env={"OTPGUARD_DATA_DIR": str(data)}))
    assert s1.secret_keys[0].get_secret_value() == s2.secret_keys[0].get_secret_value()
    assert len(bytes.fromhex(s1.secret_keys[0].get_secret_value())) == 32


def test_secrets_are_redacted_in_dumps() -> None:
    key = new_secret_hex()
    s = load_settings(
        env={
            "OTPGUARD_SECRET_KEYS": key,
            "TWILIO_AUTH_TOKEN": "tok-very-secret-123",
            "OTPGUARD_ALERT_WEBHOOK_SECRET": "hook-secret-456",
        }
    )
    for dump in (repr(s), str(s), str(s.redacted()), s.model_dump_json()):
        assert key not in dump
        assert "tok-very-secret-123" not in dump and "hook-secret-456" not in dump


def test_twilio_transport_needs_credentials_and_a_sender(tmp_path: Path) -> None:
    s = load_settings(env={"OTPGUARD_DATA_DIR": str(tmp_path), "OTPGUARD_TRANSPORT": "twilio"})
    with pytest.raises(ConfigError) as exc:
        check_startup(s)
    assert "TWILIO_ACCOUNT_SID" in exc.value.message and "OTPGUARD_TWILIO_FROM" in exc.value.message
    ready = load_settings(
        env={
            "OTPGUARD_DATA_DIR": str(tmp_path),
            "OTPGUARD_TRANSPORT": "twilio",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "x" * 32,
            "OTPGUARD_TWILIO_FROM": "+15005550006",
        }
    )
    assert check_startup(ready).transport == "twilio"


def test_client_variables_are_not_mistaken_for_typos() -> None:
    env = {"OTPGUARD_URL": "http://127.0.0.1:8000", "OTPGUARD_API_KEY": "og_x"}
    assert load_settings(env=env).env == "development"


def test_country_codes_are_the_regions_phone_numbers_have() -> None:
    s = load_settings(env={"OTPGUARD_ALLOWED_COUNTRIES": "gb, gg,JE,im,us"})
    assert s.allowed_countries == ["GB", "GG", "JE", "IM", "US"]


def test_whatsapp_configured_without_a_template_is_refused_at_start_up(tmp_path: Path) -> None:
    env = {
        "OTPGUARD_DATA_DIR": str(tmp_path),
        "OTPGUARD_TRANSPORT": "twilio",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "x" * 32,
        "OTPGUARD_TWILIO_FROM": "+15005550006",
        "OTPGUARD_TWILIO_WHATSAPP_FROM": "+15005550006",
    }
    with pytest.raises(ConfigError) as exc:
        check_startup(load_settings(env=env))
    assert "OTPGUARD_TWILIO_WHATSAPP_CONTENT_SID" in exc.value.message
    assert not (tmp_path / "secret.key").exists()
    ready = load_settings(env={**env, "OTPGUARD_TWILIO_WHATSAPP_CONTENT_SID": "HX" + "0" * 32})
    assert check_startup(ready).twilio_whatsapp_content_sid
