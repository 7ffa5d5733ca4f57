"""The command line: init, api-keys, purge, configuration errors."""

from __future__ import annotations

import argparse
import os
import re
import stat
import tomllib
from collections.abc import Iterator
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
    # og_<id>_<secret>: the secret is base64url, so it may hold "_" itself.
    _, key_id, secret = key.split("_", 2)
    assert main(["api-keys", "create", "--name", "ops", "--scope", "admin"]) == 0
    capsys.readouterr()
    assert main(["api-keys", "list"]) == 0
    listing = capsys.readouterr().out
    header, *rows = listing.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "SCOPES"]
    lines = {line.split()[-1]: line.split()[2] for line in rows}
    # Exactly the scopes asked for: an admin key is not also a verify key.
    assert lines == {"backend": "verify", "ops": "admin"}
    assert key not in listing and secret not in listing
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


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("OTPGUARD_STORE", "mysql://x", "unsupported store URL scheme 'mysql'"),
        ("OTPGUARD_BLOCKLIST", "hello", "OTPGUARD_BLOCKLIST: 'hello' is not a number or prefix"),
        ("OTPGUARD_DEV_ALLOWED_NUMBERS", "hello", "OTPGUARD_DEV_ALLOWED_NUMBERS"),
        ("OTPGUARD_ALERT_SINKS", "log,slack", "OTPGUARD_ALERT_SLACK_URL"),
    ],
)
def test_serve_refuses_a_bad_setting_before_any_side_effect(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "otpguard development on" not in err  # no serving banner
    assert not (cli_env / "data").exists()  # no key file, no database


def test_every_problem_is_named_at_once(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTPGUARD_ENV", "production")
    monkeypatch.setenv("OTPGUARD_STORE", "mysql://x")
    monkeypatch.setenv("OTPGUARD_BLOCKLIST", "hello")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    for named in ("mysql", "OTPGUARD_BLOCKLIST", "OTPGUARD_SECRET_KEYS", "OTPGUARD_TRANSPORT"):
        assert named in err
    assert "HTTPS only" in err


@pytest.mark.parametrize(("name", "value"), [("STORE", "mysql://x"), ("BLOCKLIST", "hello")])
def test_audit_fails_on_what_serve_refuses(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(f"OTPGUARD_{name}", value)
    assert main(["audit"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  config.startup" in out and f"OTPGUARD_{name}" in out


def test_purge_refuses_a_bad_setting_without_a_traceback(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTPGUARD_STORE", "mysql://x")
    assert main(["purge"]) == 2
    assert "configuration error" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["purge"], ["api-keys", "list"], ["webhooks", "list"]])
def test_commands_on_the_engine_name_a_setting_it_cannot_be_built_from(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """Every command that works on the store does so through the Verifier, so a
    setting the Verifier cannot be built from is named, without a traceback."""
    monkeypatch.setenv("OTPGUARD_BLOCKLIST", "hello")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "OTPGUARD_BLOCKLIST: 'hello'" in err
    assert "Traceback" not in err


def test_audit_does_not_pass_a_country_no_number_has(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTPGUARD_ALLOWED_COUNTRIES", "UK")
    assert main(["audit"]) == 2
    captured = capsys.readouterr()
    assert "PASS" not in captured.out
    assert "OTPGUARD_ALLOWED_COUNTRIES: 'UK' is not an ISO 3166-1 code: write GB" in captured.err


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://127.0.0.1:6379/7?sockettimeout=5", "unknown redis URL option(s) sockettimeout"),
        ("redis://127.0.0.1:6379/7?socket_timeout=five", "'socket_timeout'"),
        ("redis://127.0.0.1:6379/7?ssl_ca_certs=/ca.pem", "ssl_ca_certs"),  # rediss:// only
        ("redis+cluster://127.0.0.1:7000?socket_timeout=five", "socket_timeout"),
        ("postgresql://postgres@127.0.0.1/otpguard?connecttimeout=5", '"connecttimeout"'),
        ("sqlite:///x.db?synchronus=full", "synchronus"),
    ],
)
@pytest.mark.parametrize("command", [["serve"], ["purge"], ["api-keys", "list"]])
def test_a_mistyped_store_url_option_is_named_at_start_up(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    named: str,
    command: list[str],
) -> None:
    monkeypatch.setenv("OTPGUARD_STORE", url)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and named in err
    assert "Traceback" not in err


def test_store_url_options_that_exist_are_accepted() -> None:
    from otpguard.stores import store_from_url

    for url in (
        "redis://127.0.0.1:6379/7?socket_timeout=5&prefix=x&client_name=og",
        "rediss://127.0.0.1:6380/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required",
        "postgresql://postgres@127.0.0.1/otpguard?connect_timeout=5&pool_max_size=4",
    ):
        store_from_url(url)  # parsed only: nothing is opened


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_cli_option_and_command_has_help_text() -> None:
    from otpguard.cli import build_parser

    missing = [
        f"{p.prog} {a.dest}"
        for p in _parsers(build_parser())
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []


def test_config_is_accepted_after_the_subcommand(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = cli_env / "other.toml"
    config.write_text('allowed_countries = ["GB", "JE"]\n')
    assert main(["audit", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"development configuration ({config})" in out
    assert "codes go only to GB, JE" in out
    assert main(["serve", "--config", str(cli_env / "missing.toml")]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err


def test_every_command_and_nested_subcommand_takes_config() -> None:
    from otpguard.cli import build_parser

    leaves = [p.prog for p in _parsers(build_parser())]
    without = [
        prog
        for prog, p in zip(leaves, _parsers(build_parser()), strict=True)
        if not any("--config" in a.option_strings for a in p._actions)
    ]
    assert "otpguard api-keys list" in leaves and "otpguard numbers explain" in leaves
    assert without == []


def test_config_after_a_nested_subcommand_is_the_one_used(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two configurations with different stores: the keys land where --config points.
    for name in ("a", "b"):
        (cli_env / f"{name}.toml").write_text(f'store = "sqlite:///{cli_env / name}.db"\n')
    a, b = str(cli_env / "a.toml"), str(cli_env / "b.toml")
    assert main(["api-keys", "create", "--name", "in-a", "--config", a]) == 0
    assert main(["api-keys", "create", "--config", b, "--name", "in-b"]) == 0
    capsys.readouterr()
    assert main(["api-keys", "list", "--config", a]) == 0
    listing = capsys.readouterr().out
    assert "in-a" in listing and "in-b" not in listing
    # A later --config wins over the global one; a subcommand without one keeps the global.
    assert main(["--config", a, "api-keys", "list", "--config", b]) == 0
    listing = capsys.readouterr().out
    assert "in-b" in listing and "in-a" not in listing
    assert main(["--config", b, "api-keys", "list"]) == 0
    assert "in-b" in capsys.readouterr().out
    (cli_env / "gb.toml").write_text('allowed_countries = ["GB"]\n')
    assert main(["numbers", "explain", "+33612345678", "--json", "--config", "gb.toml"]) == 0
    assert '"allowed": false' in capsys.readouterr().out
    assert main(["purge", "--config", str(cli_env / "missing.toml")]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err


def test_api_keys_list_has_a_header_the_og_ids_revoke_takes_and_creation_dates(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api-keys", "create", "--name", "backend"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    key_id = "_".join(key.split("_")[:2])  # og_<12 hex>, as the docs name it
    assert main(["api-keys", "list"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["ID", "STATE", "SCOPES", "CREATED", "(UTC)", "NAME"]
    assert row.split()[0] == key_id and row.split()[1] == "active"
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)
    assert main(["api-keys", "revoke", key]) == 2  # the whole key: refused, not looked up
    assert key not in capsys.readouterr().out
    assert main(["api-keys", "revoke", key_id]) == 0
    assert capsys.readouterr().out.strip() == f"revoked {key_id}"
