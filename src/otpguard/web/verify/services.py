"""Verify services, kept as service records, and the FastAPI dependencies that load them.

Each service is a service record of the store (``Store.put_service``: its SID, its
account SID, the service as JSON), kept for good until it is deleted; an account's
are listed oldest first, at most ``MAX_SERVICES`` of them, the cap kept by the
store's atomic put (a create over it is 60200). Which service each verification was
started under is in the verification's row (``Verification.service``).

Services belong to the API key that created them (their account SID is the
key's); another key gets 20404, an ``admin`` key sees every key's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Annotated

from fastapi import Depends, Request

from ...errors import NotFound
from ...models import Verification
from ...service import Verifier
from ...stores.base import ApiKey, ServiceRecord
from ...webhooks import ROUTE, SERVICE_FLAG, service_scope
from ..api import tenant_of, verifier_of
from .errors import invalid, not_found
from .forms import account_sid, authenticate

# Which service a verification was started under, as kept before its row said so
# (``Verification.service``): only read, for the verifications of before that.
OWNER_KEY = SERVICE_FLAG  # also read by the webhook outbox (webhooks.py)
MAX_SERVICES = 100  # per API key

_SERVICE_SID = re.compile(r"^VA[0-9a-f]{32}$")
_VERIFICATION_SID = re.compile(r"^VE[0-9a-f]{32}$")


@dataclass(frozen=True)
class VerifyService:
    sid: str
    account_sid: str
    friendly_name: str
    code_length: int
    created_at: float
    updated_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> VerifyService:
        """What ``to_json`` wrote: each field by its name (a key it does not know is passed by)."""
        data = json.loads(raw)
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    @classmethod
    def of(cls, record: ServiceRecord) -> VerifyService:
        return cls.from_json(record.document)

    def record(self) -> ServiceRecord:
        return ServiceRecord(self.sid, self.account_sid, self.to_json(), self.created_at)


def visible(svc: VerifyService, key: ApiKey) -> bool:
    """A service is the creating key's; an ``admin`` key (no tenant) sees all."""
    return tenant_of(key) is None or svc.account_sid == account_sid(key)


async def find_service(verifier: Verifier, sid: str) -> VerifyService | None:
    """The service ``sid``; None if ``sid`` is no service SID or there is none."""
    record = await verifier.service(sid) if _SERVICE_SID.match(sid) else None
    return None if record is None else VerifyService.of(record)


async def load_service(
    request: Request, verifier: Verifier, sid: str, key: ApiKey
) -> VerifyService:
    """The service, if ``key`` may see it; 20404 otherwise, exactly as for no service."""
    svc = await find_service(verifier, sid)
    if svc is None or not visible(svc, key):
        raise not_found(request)
    ROUTE.set(service_scope(svc.sid))  # this request's events: the service's webhook first
    return svc


async def service_exists(verifier: Verifier, sid: str) -> bool:
    """Whether a /v2 service of that SID exists (for the webhook settings)."""
    return await find_service(verifier, sid) is not None


async def save_service(verifier: Verifier, svc: VerifyService) -> None:
    """Keep ``svc``: a new one only while its account has fewer than ``MAX_SERVICES``
    (60200 otherwise), a change of an existing one always."""
    if not await verifier.keep_service(svc.record(), MAX_SERVICES):
        raise invalid("FriendlyName", f"at most {MAX_SERVICES} services per API key")


async def list_services(verifier: Verifier, account: str) -> list[VerifyService]:
    """The account's services, oldest first."""
    return [VerifyService.of(r) for r in await verifier.services(account)]


async def in_service(
    verifier: Verifier, sid: str, candidates: Sequence[Verification]
) -> list[Verification]:
    """Those of ``candidates`` started under the service ``sid``: their row says so.
    A row without a service is one of before rows had it (or a /v1 one): its
    service, if any, is the record the /v2 API kept then, read for those only."""
    older = [OWNER_KEY + v.id for v in candidates if v.service is None]
    owners = await verifier.records(older) if older else {}
    return [v for v in candidates if (v.service or owners.get(OWNER_KEY + v.id)) == sid]


async def owned(request: Request, call: ServiceCall, verification_sid: str) -> Verification:
    """The verification if it was started under this service; 20404 otherwise."""
    if not _VERIFICATION_SID.match(verification_sid):
        raise not_found(request)
    try:
        v = await call.verifier.get(verification_sid, owner=call.tenant)
    except NotFound:
        raise not_found(request) from None
    if not await in_service(call.verifier, call.service.sid, [v]):
        raise not_found(request)
    return v


# -- dependencies --------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated /v2 request: the Verifier and the API key."""

    verifier: Verifier
    key: ApiKey

    @property
    def tenant(self) -> str | None:
        return tenant_of(self.key)


@dataclass(frozen=True)
class ServiceCall(Caller):
    """An authenticated /v2 request under one of the key's services."""

    service: VerifyService


async def caller(request: Request) -> Caller:
    verifier = verifier_of(request)
    return Caller(verifier, await authenticate(request, verifier))


async def service_call(
    request: Request, service_sid: str, who: Annotated[Caller, Depends(caller)]
) -> ServiceCall:
    svc = await load_service(request, who.verifier, service_sid, who.key)
    return ServiceCall(who.verifier, who.key, svc)


AuthDep = Annotated[Caller, Depends(caller)]
ServiceDep = Annotated[ServiceCall, Depends(service_call)]
