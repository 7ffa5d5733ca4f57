"""Maintenance: purging what is stale, on demand or as a job; a number explained."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .. import numberlists
from ..errors import StorageError
from ..phone import parse
from .base import VERIFICATION_GRACE, VerifierBase

log = logging.getLogger("otpguard.service")


class Maintaining(VerifierBase):
    """The purge and its job, and the policy's view of one number."""

    async def explain_number(self, raw: str) -> dict[str, object]:
        """The policy's decisions, with the run-time block and allow entries applied."""
        number = parse(raw, self.settings.default_region)
        info = self.policy.explain(number)
        flags = await self.store.get_flags(numberlists.flag_keys(number.e164), self.clock())
        exempt = self.policy.twilio_test_credentials and number.is_twilio_magic
        numberlists.explain(info, flags, number.e164, exempt=exempt)
        return info

    async def purge(self, *, scheduled: bool = False) -> int:
        """Delete what is stale. ``scheduled``: the maintenance job's lighter pass, which
        leaves to a backend what it expires by itself (Redis TTLs)."""
        now = self.clock()
        op = self.store.scheduled_purge if scheduled else self.store.purge
        return await op(
            now,
            verification_grace=VERIFICATION_GRACE,
            rate_horizon=self._rate_horizon,
            event_horizon=self.settings.event_retention_days * 86400.0,
        )

    async def run_maintenance(self, stop: asyncio.Event) -> None:
        """Purge on a schedule until ``stop`` is set; store errors are logged, not fatal."""
        while not stop.is_set():
            try:
                removed = await self.purge(scheduled=True)
                if removed:
                    log.debug("purged %d stale rows", removed)
            except StorageError:
                log.warning("purge failed: store unavailable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.purge_interval)
