"""Stores, chosen by one URL: ``sqlite:///path``, ``redis://host:6379/0``,
``postgresql://user@host/db``."""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import Alert, ApiKey, EventQuery, Store

__all__ = ["Alert", "ApiKey", "EventQuery", "Store", "store_from_url"]

# scheme -> ("module:Class", "extra to install")
SCHEMES: dict[str, tuple[str, str | None]] = {
    "sqlite": ("otpguard.stores.sqlite:SQLiteStore", None),
    "redis": ("otpguard.stores.redis:RedisStore", "redis"),
    "rediss": ("otpguard.stores.redis:RedisStore", "redis"),
    "redis+cluster": ("otpguard.stores.redis:RedisStore", "redis"),
    "postgresql": ("otpguard.stores.postgres:PostgresStore", "postgres"),
    "postgres": ("otpguard.stores.postgres:PostgresStore", "postgres"),
}


def store_from_url(url: str) -> Store:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            f"OTPGUARD_STORE: unsupported store URL scheme {scheme!r}; use one of "
            + ", ".join(sorted(f"{s}://" for s in SCHEMES))
        )
    target, extra = SCHEMES[scheme]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'otpguard[{extra}]'" if extra else "reinstall otpguard"
        raise ConfigError(f"OTPGUARD_STORE={scheme}://... needs an extra: {hint} ({exc})") from exc
    cls = getattr(module, cls_name)
    store: Store = cls(url)
    return store
