"""The :class:`Verifier`, joined from its parts, and :func:`open_verifier`."""

from __future__ import annotations

from ..clock import Clock, system_clock
from ..config import Settings
from ..startup import check_startup
from ..stores import store_from_url
from ..transports import email_transport_from_settings, transport_from_settings
from .check import Checking
from .maintenance import Maintaining
from .operations import Operations
from .records import Records
from .send import Sending


class Verifier(Sending, Checking, Maintaining, Operations, Records):
    """Start, resend, check and cancel verifications. Use as an async context manager.

    The only place where policy meets storage and delivery: the HTTP API, the
    dashboard, the alert job, the CLI and embedded users call its methods and never
    the store. Its parts: ``base.py`` (construction, events, get and cancel),
    ``send.py`` / ``admit.py`` / ``deliver.py`` (the send path and delivery reports),
    ``check.py`` (the check path), ``maintenance.py`` (purge), ``operations.py``
    (API keys, events, statistics, alerts, webhooks) and ``records.py`` (the
    shells' records)."""

    async def __aenter__(self) -> Verifier:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def open_verifier(settings: Settings, *, clock: Clock = system_clock) -> Verifier:
    """A Verifier built from settings alone (store by URL, transport by name), validated
    as ``otpguard serve`` would. Use it as ``async with open_verifier(settings) as otp:``."""
    settings = check_startup(settings)
    return Verifier(
        settings,
        store_from_url(settings.store_url),
        transport_from_settings(settings),
        clock=clock,
        email_transport=email_transport_from_settings(settings),
    )
