"""What the shells keep beside the verifications: their service records, and
timed records with a lock to change them.

The ``/v2`` layer's services are service records (``stores.records.ServiceRecord``):
kept for good under their account, listed by it, at most a cap per account, each
put atomic in every backend. Timed records are a key and a string kept until a time
(store flags, purged once their time has passed): the dashboard's sign-outs, and
the /v2 layer's records of before its service records, still read for what was
kept then.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from ..models import RateRule
from ..stores.records import ServiceRecord
from .base import VerifierBase


class Records(VerifierBase):
    """Read, keep and lock the shells' records."""

    async def service(self, service_id: str) -> ServiceRecord | None:
        """The service record ``service_id``, None if there is none."""
        return await self.store.get_service(service_id)

    async def services(self, account: str) -> list[ServiceRecord]:
        """The account's service records, oldest first."""
        return await self.store.list_services(account)

    async def keep_service(self, record: ServiceRecord, cap: int) -> bool:
        """Keep ``record`` (a new one only while its account has fewer than ``cap``):
        whether it was kept."""
        return await self.store.put_service(record, cap)

    async def delete_service(self, service_id: str) -> bool:
        """Whether there was a service record ``service_id`` to delete."""
        return await self.store.delete_service(service_id)

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
