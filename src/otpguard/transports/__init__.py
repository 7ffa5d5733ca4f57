"""Delivery transports, chosen by name: console, memory, file, twilio."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .base import Message, Receipt, Transport, pick_locale

__all__ = ["Message", "Receipt", "Transport", "pick_locale", "transport_from_settings"]


def transport_from_settings(settings: Settings) -> Transport:
    """The transport named by ``OTPGUARD_TRANSPORT``."""
    name = settings.transport
    if name == "console":
        from .console import ConsoleTransport

        return ConsoleTransport()
    if name == "memory":
        from .memory import MemoryTransport

        return MemoryTransport()
    if name == "file":
        from .file import FileTransport

        return FileTransport(settings.outbox_file)
    if name == "twilio":
        from .twilio import TwilioTransport

        return TwilioTransport.from_settings(settings)
    raise ConfigError(f"OTPGUARD_TRANSPORT: unknown transport {name!r}")
