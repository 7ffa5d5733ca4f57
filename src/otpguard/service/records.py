"""What the shells keep beside the verifications: their service records and the
dashboard's sign-outs, each a part of the storage contract of its own.

The ``/v2`` layer's services are service records (``stores.records.ServiceRecord``):
kept for good under their account, listed by it, at most a cap per account, each
put atomic in every backend. Timed records are a key and a string kept until a time
(store flags, purged once their time has passed): the dashboard's sign-outs, and
the /v2 layer's records of before its service records, still read for what was
kept then.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..models import Verification
from ..stores.records import ServiceRecord
from .base import PENDING_PER_CHECK, VerifierBase


class Records(VerifierBase):
    """The shells' service records and sign-outs, and a number's verifications for them."""

    async def recent(
        self, to: str, *, owner: str | None = None, any_status: bool = False
    ) -> list[Verification]:
        """The number's newest pending verifications (``any_status``: whatever their
        status), unexpired, newest first, at most ``PENDING_PER_CHECK``; ``owner``: the
        API key asking (another key's are left out). For a shell's own scoping (the
        /v2 API's re-sends): ``to`` is an E.164 number or a normalised address."""
        return await self.store.list_pending(
            to, self.clock(), owner=owner, limit=PENDING_PER_CHECK, any_status=any_status
        )

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

    async def sign_out(self, session_id: str, until: float) -> None:
        """End the dashboard session ``session_id`` until ``until`` (its expiry)."""
        await self.store.sign_out(session_id, until)

    async def signed_out(self, session_id: str) -> bool:
        """Whether the dashboard session ``session_id`` was signed out."""
        return await self.store.signed_out(session_id, self.clock())

    async def records(self, keys: Sequence[str]) -> dict[str, str]:
        """The live ones of the records (store flags) ``keys``, in one store read: key ->
        value. Read only: what the /v2 layer kept so before the verification's row named
        its service (``Verification.service``), still read for what was kept then."""
        return await self.store.get_flags(list(keys), self.clock()) if keys else {}
