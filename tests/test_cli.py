"""The command line: init, api-keys, purge, configuration errors."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from otpguard.cli import main
from otpguard.codes import Keyring


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("OTPGUARD_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTPGUARD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_init_writes_a_private_config_with_a_strong_key(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    path = cli_env / "otpguard.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = tomllib.loads(path.read_text())
    Keyring.from_hex(data["secret_keys"])  # a valid, strong key
    assert len(bytes.fromhex(data["secret_keys"][0])) == 32
    assert data["secret_keys"][0] not in capsys.readouterr().out
    assert main(["init"]) == 1  # never overwrite a key by accident
    assert "exists" in capsys.readouterr().err


def test_init_production_template(cli_env: Path) -> None:
    assert main(["init", "--production", "--path", "prod.toml"]) == 0
    data = tomllib.loads((cli_env / "prod.toml").read_text())
    assert data["env"] == "production" and data["transport"] == "twilio"


def test_api_keys_create_list_revoke(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api-keys", "create", "--name", "backend"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    key = out[-1]
    assert key.startswith("og_") and len(key) == 3 + 12 + 1 + 43
    key_id = key.split("_")[1]
    assert main(["api-keys", "create", "--name", "ops", "--scope", "admin"]) == 0
    capsys.readouterr()
    assert main(["api-keys", "list"]) == 0
    listing = capsys.readouterr().out
    lines = {line.split()[-1]: line.split()[2] for line in listing.splitlines()}
    # Exactly the scopes asked for: an admin key is not also a verify key.
    assert lines == {"backend": "verify", "ops": "admin"}
    assert key not in listing and key.split("_")[2] not in listing
    assert main(["api-keys", "revoke", key_id]) == 0
    assert main(["api-keys", "revoke", key_id]) == 1
    capsys.readouterr()
    main(["api-keys", "list"])
    assert "revoked" in capsys.readouterr().out


def test_api_keys_scopes(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["api-keys", "create", "--name", "all", "--scope", "verify", "--scope", "monitor"]
    assert main(args) == 0
    assert "scopes: verify, monitor" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["api-keys", "create", "--name", "x", "--scope", "root"])


def test_configuration_errors_exit_2_with_the_fix(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTPGUARD_CODE_TTL", "900")
    assert main(["api-keys", "list"]) == 2
    assert "OTPGUARD_CODE_TTL" in capsys.readouterr().err


def test_serve_refuses_unsafe_production(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTPGUARD_ENV", "production")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "refusing to start in production" in err and "OTPGUARD_SECRET_KEYS" in err


def test_purge(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purge"]) == 0
    assert "purged 0 stale rows" in capsys.readouterr().out
