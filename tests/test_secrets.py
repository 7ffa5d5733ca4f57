"""HMAC keys, API keys and Twilio tokens never appear in logs, errors or config dumps;
files written by ``otpguard init`` are mode 0600."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otpguard import cli
from otpguard.codes import new_secret_hex
from otpguard.config import Settings, ensure_dev_key, load_settings
from otpguard.errors import ConfigError
from otpguard.startup import check_startup
from otpguard.transports.twilio import TwilioTransport

from .conftest import UK_MOBILE, ApiClient
from .dump import dump_store

HMAC_KEY = new_secret_hex()
TWILIO_TOKEN = "tw" + "7" * 30
TWILIO_API_SECRET = "as" + "8" * 30
WEBHOOK_SECRET = "wh" + "9" * 30
SMTP_PASSWORD = "smtp-" + "6" * 20
SECRETS = (HMAC_KEY, TWILIO_TOKEN, TWILIO_API_SECRET, WEBHOOK_SECRET, SMTP_PASSWORD)


def secret_settings(factory: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "secret_keys": [HMAC_KEY],
        "twilio_account_sid": "AC" + "3" * 32,
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_api_key": "SK" + "4" * 32,
        "twilio_api_secret": TWILIO_API_SECRET,
        "alert_webhook_secret": WEBHOOK_SECRET,
        "smtp_password": SMTP_PASSWORD,
    }
    values.update(overrides)
    return factory(**values)


def assert_clean(text: str, *extra: str) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in text


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("OTPGUARD_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


# -- config dumps -----------------------------------------------------------------------------


def test_settings_dumps_hide_every_secret(settings_factory: Callable[..., Settings]) -> None:
    s = secret_settings(settings_factory)
    assert s.twilio_auth_token.get_secret_value() == TWILIO_TOKEN  # the value is really there
    dumps = [
        repr(s),
        str(s),
        json.dumps(s.redacted()),
        s.model_dump_json(),
        repr(s.keyring()),
        repr(s.model_dump()),
    ]
    for text in dumps:
        assert_clean(text)
    assert s.redacted()["twilio_auth_token"] == "**********"


def test_twilio_transport_repr_hides_credentials(settings_factory: Callable[..., Settings]) -> None:
    transport = TwilioTransport(
        secret_settings(settings_factory, transport="twilio", twilio_from="+447400000001").twilio
    )
    assert_clean(repr(transport))


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_key",
    ["ab" * 16, "zz" * 32, "not hex at all " + HMAC_KEY],
    ids=["short", "not-hex", "garbage"],
)
def test_key_errors_never_echo_the_key(tmp_path: Path, bad_key: str) -> None:
    settings = load_settings(env={}, data_dir=tmp_path, secret_keys=[bad_key])
    with pytest.raises(ConfigError) as info:
        check_startup(settings)
    assert bad_key not in str(info.value)
    assert bad_key not in info.value.message
    assert HMAC_KEY not in str(info.value)
    assert "OTPGUARD_SECRET_KEYS" in info.value.message


def test_invalid_secret_values_are_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("twilio_auth_token = 123456789012345678901234567890\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_file=config)
    assert "123456789012345678901234567890" not in str(info.value)
    assert "OTPGUARD_TWILIO_AUTH_TOKEN" in str(info.value)


@pytest.mark.usefixtures("clean_env")
def test_cli_configuration_errors_never_print_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = "cd" * 20  # 20 bytes: too short
    monkeypatch.setenv("OTPGUARD_SECRET_KEYS", weak)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    assert cli.main(["purge"]) == 2
    out = capsys.readouterr()
    assert "20 bytes" in out.err
    assert weak not in out.out + out.err
    assert_clean(out.out + out.err)


# -- logs ---------------------------------------------------------------------------------------


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Overrides conftest's: the ``api`` fixture then runs with every secret set."""
    return secret_settings(settings_factory)


async def test_a_whole_api_session_logs_no_secret(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    from otpguard.transports.memory import MemoryTransport

    outbox = api.verifier.transport
    assert isinstance(outbox, MemoryTransport)
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE, "client_ip": "198.51.100.9"})
    assert r.status_code == 201
    vid = r.json()["id"]
    code = outbox.last_code(UK_MOBILE)
    wrong = "1" if code[0] != "1" else "2"
    r = await api.post("/v1/verifications/check", json={"id": vid, "code": wrong + code[1:]})
    assert r.json()["valid"] is False
    r = await api.post("/v1/verifications/check", json={"id": vid, "code": code})
    assert r.json()["valid"] is True
    forged = api.key[:-4] + "AAAA"
    r = await api.post(
        "/v1/verifications", json={"to": UK_MOBILE}, headers={"Authorization": f"Bearer {forged}"}
    )
    assert r.status_code == 401
    assert caplog.records, "the session should have logged events"
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    logged += "\n".join(repr(rec.args) for rec in caplog.records)
    assert_clean(logged, api.key, forged, code)
    bodies = "\n".join(resp.text + str(resp.headers) for resp in api.responses)
    assert_clean(bodies, api.key, forged, code)
    dump = await dump_store(api.verifier.store)
    assert api.key not in dump
    assert code not in dump


# -- files ---------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("production", [False, True])
def test_init_writes_mode_0600_even_with_a_permissive_umask(
    tmp_path: Path, production: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "otpguard.toml"
    old = os.umask(0)
    try:
        argv = ["init", "--path", str(path)] + (["--production"] if production else [])
        assert cli.main(argv) == 0
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    key = load_settings(env={}, config_file=path).secret_keys[0].get_secret_value()
    assert key not in capsys.readouterr().out  # the key is written, never printed


@pytest.mark.usefixtures("clean_env")
def test_init_force_replaces_a_loose_file_with_a_0600_one(tmp_path: Path) -> None:
    path = tmp_path / "otpguard.toml"
    path.write_text("# old\n")
    path.chmod(0o644)
    assert cli.main(["init", "--path", str(path)]) == 1  # no --force: untouched
    assert _mode(path) == 0o644
    assert cli.main(["init", "--path", str(path), "--force"]) == 0
    assert _mode(path) == 0o600
    assert not list(tmp_path.glob("*.tmp"))


def test_the_development_key_file_is_mode_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = os.umask(0)
    try:
        s = ensure_dev_key(load_settings(env={}, data_dir=tmp_path / "dev"))
    finally:
        os.umask(old)
    key_file = tmp_path / "dev" / "secret.key"
    assert _mode(key_file) == 0o600
    key = s.secret_keys[0].get_secret_value()
    assert key_file.read_text().strip() == key
    assert key not in caplog.text


@pytest.mark.usefixtures("clean_env")
def test_api_keys_are_shown_once_and_never_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "otpguard.toml"
    config.write_text(f'secret_keys = ["{HMAC_KEY}"]\nstore = "sqlite:///{tmp_path / "keys.db"}"\n')
    assert cli.main(["--config", str(config), "api-keys", "create", "--name", "ci"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("og_")
    assert cli.main(["--config", str(config), "api-keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "ci" in listing
    assert key not in listing
    assert key.split("_", 2)[2] not in listing
    assert key not in caplog.text
