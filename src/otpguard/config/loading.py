"""Where the settings come from: defaults, a TOML file (``OTPGUARD_CONFIG``, else
``./otpguard.toml`` when it exists), then environment variables, later ones winning.
Every field ``foo_bar`` is read from ``OTPGUARD_FOO_BAR``; Twilio credentials also
from the SDK's own names. Lists are comma-separated in the environment; maps are
``KEY=VALUE`` pairs separated by commas. Errors name the variable and say what to set.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from ..codes import new_secret_hex
from ..errors import ConfigError
from .settings import Settings

log = logging.getLogger("otpguard.config")

# Fields read from the Twilio SDK's own variable names as well as OTPGUARD_*.
_ALIASES = {
    "twilio_account_sid": "TWILIO_ACCOUNT_SID",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_api_key": "TWILIO_API_KEY",
    "twilio_api_secret": "TWILIO_API_SECRET",
}

#: OTPGUARD_* names that are not server settings: the config file's path, and what
#: client apps and examples read (the server's URL and their API key).
NOT_SERVER_SETTINGS = frozenset(
    {
        "OTPGUARD_CONFIG",
        "OTPGUARD_URL",
        "OTPGUARD_API_KEY",
        "OTPGUARD_KEY_ID",
        "OTPGUARD_VERIFY_SERVICE_SID",
    }
)


def _split_list(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def _split_map(raw: str) -> dict[str, str]:
    out = {}
    for pair in _split_list(raw):
        k, sep, v = pair.partition("=")
        if not sep:
            raise ConfigError(f"{pair!r} is not KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        raw = env.get(f"OTPGUARD_{name.upper()}")
        if raw is None and name in _ALIASES:
            raw = env.get(_ALIASES[name])
        if raw is None:
            continue
        ann = str(info.annotation)
        if ann.startswith("list["):
            values[name] = _split_list(raw)
        elif ann.startswith("dict["):
            values[name] = _split_map(raw)
        else:
            values[name] = raw
    unknown = [
        k
        for k in env
        if k.startswith("OTPGUARD_")
        and k[9:].lower() not in Settings.model_fields
        and k not in NOT_SERVER_SETTINGS
    ]
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; check the spelling against "
            "the README's configuration table"
        )
    return values


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        var = f"OTPGUARD_{field.upper()}"
        if field in _ALIASES:
            var += f" (or {_ALIASES[field]})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{var}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Read the TOML file and the environment, apply ``overrides``, validate."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or (Path(env["OTPGUARD_CONFIG"]) if env.get("OTPGUARD_CONFIG") else None)
    if path is None and Path("otpguard.toml").is_file():
        path = Path("otpguard.toml")
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (OTPGUARD_CONFIG)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        data = data.get("otpguard", data)
        unknown = [k for k in data if k not in Settings.model_fields]
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        values.update(data)
    values.update(_from_env(env))
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def ensure_dev_key(settings: Settings) -> Settings:
    """Development without OTPGUARD_SECRET_KEYS: create and keep a key in the data directory."""
    if settings.secret_keys or settings.production:
        return settings
    key_file = settings.data_dir / "secret.key"
    if key_file.exists():
        key = key_file.read_text().strip()
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = new_secret_hex()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        log.warning(
            "development mode: no OTPGUARD_SECRET_KEYS set; created a key in %s. "
            "Production needs OTPGUARD_SECRET_KEYS (run `otpguard init`).",
            key_file,
        )
    return settings.model_copy(update={"secret_keys": [SecretStr(key)]})
