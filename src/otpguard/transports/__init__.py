"""Delivery transports, chosen by name: console, memory, file, twilio; for the email
channel also smtp and sendgrid (``OTPGUARD_EMAIL_TRANSPORT``).

The two functions here are the only place that reads the whole settings: each
transport is built from its own section (Twilio from ``settings.twilio``, SMTP and
SendGrid from ``settings.email``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Message, Receipt, Transport, pick_locale
from .console import ConsoleTransport
from .file import FileTransport
from .memory import MemoryTransport
from .sendgrid import SendGridTransport

if TYPE_CHECKING:
    from ..config import Settings

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
        return ConsoleTransport()
    if name == "memory":
        return MemoryTransport()
    if name == "file":
        return FileTransport(settings.core.outbox_file)
    if name == "twilio":
        from .twilio import TwilioTransport  # only when chosen: the SDK is heavy to import

        return TwilioTransport(settings.twilio)
    raise ConfigError(f"OTPGUARD_TRANSPORT: unknown transport {name!r}")


def email_transport_from_settings(settings: Settings) -> Transport | None:
    """The email channel's transport named by ``OTPGUARD_EMAIL_TRANSPORT``; None when
    unset (the Verifier then uses the phone transport if it carries any channel)."""
    name = settings.email_transport
    if name == "":
        return None
    if name == "smtp":
        try:
            from .smtp import SmtpTransport  # aiosmtplib is an optional extra
        except ImportError:
            raise ConfigError(
                "OTPGUARD_EMAIL_TRANSPORT=smtp needs aiosmtplib: pip install 'otpguard[email]'"
            ) from None
        return SmtpTransport(settings.email)
    if name == "sendgrid":
        return SendGridTransport(settings.email)
    if name == "file":
        return FileTransport(settings.core.outbox_file)
    return transport_from_settings(settings.model_copy(update={"transport": name}))
