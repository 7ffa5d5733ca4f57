"""Records the shells keep beside the verifications, and a lock to change them.

The ``/v2`` layer keeps its services, each account's list of them and which
service each verification was started under as records: a key and a string,
kept until a time (a far-future time keeps one for good; a time already past
deletes it). They are store flags (durable and atomic in every backend, purged
once their time has passed), so a record needs no table or migration of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from ..models import RateRule
from .base import VerifierBase


class Records(VerifierBase):
    """Read, keep and lock the shells' records."""

    async def record(self, key: str) -> str | None:
        """The live value of the record ``key``, None if there is none."""
        return await self.store.get_flag(key, self.clock())

    async def records(self, keys: Sequence[str]) -> dict[str, str]:
        """The live ones of ``keys``, in one store read: key -> value."""
        return await self.store.get_flags(list(keys), self.clock()) if keys else {}

    async def keep_record(self, key: str, value: str, until: float) -> None:
        """Set the record ``key`` to ``value`` until ``until`` (epoch seconds)."""
        await self.store.set_flag(key, value, until)

    async def drop_record(self, key: str, value: str) -> None:
        """End the record ``key`` now: it reads as absent and is purged."""
        await self.store.set_flag(key, value, self.clock())

    @contextlib.asynccontextmanager
    async def locked(self, name: str, key: str, seconds: int) -> AsyncIterator[bool]:
        """Hold ``key`` for a read-modify-write of records: yields True if this caller
        holds it (until the block ends, or ``seconds`` after a crash), False if another
        does. Made of the store's atomic ``hit``: one entry allowed per window, given
        back when the block ends."""
        now = self.clock()
        taken = await self.store.hit([RateRule(name, key, 1, seconds)], now)
        if not taken.allowed:
            yield False
            return
        try:
            yield True
        finally:
            await self.store.release([key], now)
