"""What every ``otpguard`` command shares: its settings (``--config`` and the
``OTPGUARD_*`` variables, ``--certfile``/``--keyfile`` over them), the log format, and
the engine a command works on (commands never open the store themselves).

``cli.py`` builds the parser; ``cli_numbers.py``, ``cli_webhooks.py`` and the
``audit`` command import their helpers from here, so no command module imports
``cli.py`` back.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from .codes import Keyring
from .config import Settings, load_settings
from .service import Verifier
from .startup import check_startup
from .stores import store_from_url
from .transports.memory import MemoryTransport

T = TypeVar("T")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings a command runs with: ``--config`` if given, else the default file
    and the environment (``config.load_settings``)."""
    path = Path(args.config) if getattr(args, "config", None) else None
    return load_settings(config_file=path)


def with_tls_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """``--certfile``/``--keyfile`` over OTPGUARD_TLS_*, before anything is checked
    (``serve`` and ``audit`` judge the same configuration)."""
    update: dict[str, Any] = {}
    if getattr(args, "certfile", None):
        update["tls_certfile"] = Path(args.certfile)
    if getattr(args, "keyfile", None):
        update["tls_keyfile"] = Path(args.keyfile)
    return settings.model_copy(update=update) if update else settings


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party HTTP clients may log request bodies (Twilio echoes the code): keep them quiet.
    for noisy in ("twilio", "twilio.http_client", "httpx", "httpcore", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def with_verifier(
    settings: Settings, fn: Callable[[Verifier], Awaitable[T]], *, signs: bool = False
) -> T:
    """``fn`` on the engine over the configured store, opened for it and closed after:
    for the commands that read and change API keys and webhook endpoints.

    Without the start-up checks (an operator manages keys on a configuration that
    ``serve`` would still refuse, as before) and with a transport that sends nothing.
    A command that ``signs`` (a webhook secret) needs the configured keys; the others
    sign nothing and run without any, so a throwaway key stands in for none."""
    if settings.secret_keys or signs:
        keyring = settings.keyring()  # no keys: the ConfigError that names the variable
    else:
        keyring = Keyring([secrets.token_bytes(32)])
    verifier = Verifier(
        settings, store_from_url(settings.store_url), MemoryTransport(), keyring=keyring
    )
    async with verifier:
        return await fn(verifier)


def key_id_of(raw: str) -> str | None:
    """The API key id in ``raw`` (``og_`` optional); None, with the reason printed,
    when ``raw`` is a whole key rather than its id."""
    key_id = raw.removeprefix("og_")
    if "_" in key_id:
        print("pass the key's id (og_ and 12 hex digits), not the whole key", file=sys.stderr)
        return None
    return key_id


def offline_verifier(settings: Settings) -> Verifier:
    """The engine over the configured store, after the start-up checks, with a
    transport that sends nothing: for commands that change state (purge, the number
    lists) and record their events as the service would. Use with ``async with``."""
    settings = check_startup(settings)
    return Verifier(settings, store_from_url(settings.store_url), MemoryTransport())
