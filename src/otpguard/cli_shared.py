"""What every ``otpguard`` command shares: its settings (``--config`` and the
``OTPGUARD_*`` variables, ``--certfile``/``--keyfile`` over them), the log format, and
the store or the engine a command works on.

``cli.py`` builds the parser; ``cli_numbers.py``, ``cli_webhooks.py`` and the
``audit`` command import their helpers from here, so no command module imports
``cli.py`` back.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .service import Verifier
from .startup import check_startup
from .stores import Store, store_from_url
from .transports.memory import MemoryTransport


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


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[Any]]) -> Any:
    """``fn`` on the configured store, opened for it and closed after."""
    store = store_from_url(settings.store_url)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.aclose()


def offline_verifier(settings: Settings) -> Verifier:
    """The engine over the configured store, after the start-up checks, with a
    transport that sends nothing: for commands that change state (purge, the number
    lists) and record their events as the service would. Use with ``async with``."""
    settings = check_startup(settings)
    return Verifier(settings, store_from_url(settings.store_url), MemoryTransport())
