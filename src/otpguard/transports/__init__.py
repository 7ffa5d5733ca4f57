"""Delivery transports, chosen by name: console, memory, file, twilio; for the email
channel also smtp and sendgrid (``OTPGUARD_EMAIL_TRANSPORT``)."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .base import Message, Receipt, Transport, pick_locale

__all__ = [
    "Message",
    "Receipt",
    "Transport",
    "email_transport_from_settings",
    "pick_locale",
    "transport_from_settings",
]


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


def email_transport_from_settings(settings: Settings) -> Transport | None:
    """The email channel's transport named by ``OTPGUARD_EMAIL_TRANSPORT``; None when
    unset (the Verifier then uses the phone transport if it carries any channel)."""
    name = settings.email_transport
    if name == "":
        return None
    if name == "smtp":
        try:
            from .smtp import SmtpTransport
        except ImportError:
            raise ConfigError(
                "OTPGUARD_EMAIL_TRANSPORT=smtp needs aiosmtplib: pip install 'otpguard[email]'"
            ) from None
        return SmtpTransport.from_settings(settings)
    if name == "sendgrid":
        from .sendgrid import SendGridTransport

        return SendGridTransport.from_settings(settings)
    if name == "file":
        from .file import FileTransport

        return FileTransport(settings.outbox_file)
    return transport_from_settings(settings.model_copy(update={"transport": name}))
