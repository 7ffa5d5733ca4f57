"""Verify services, kept as flags, and the FastAPI dependencies that load them.

The storage contract has no services table, and adding one would mean a
migration and a contract test in every backend for a few rows of
configuration. A Verifier record (``service/records.py``: a store flag) is
already a durable, atomic key -> string in every backend, purged only once its
time has passed: a far-future time keeps a service for good, deleting one ends
its record now. The value is the service as JSON. The same mechanism records which service
each verification was started under, for as long as the verification is kept.

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
from ...stores.base import ApiKey
from ...webhooks import ROUTE, SERVICE_FLAG, service_scope
from ..api import tenant_of, verifier_of
from .errors import TwilioError, invalid, not_found
from .forms import account_sid, authenticate

FOREVER = 253402300799.0  # 9999-12-31T23:59:59Z
# The flag prefixes keep the old module name: services already stored stay found.
SERVICE_KEY = "verify_compat:service:"
# Which service a verification was started under, as kept before its row said so
# (``Verification.service``): only read, for the verifications of before that.
OWNER_KEY = SERVICE_FLAG  # also read by the webhook outbox (webhooks.py)
INDEX_KEY = "verify_compat:services_of:"  # + account SID: its services' SIDs, as JSON
MAX_SERVICES = 100  # per API key: the index is one flag, read whole for a list
TOO_MANY_REQUESTS = 20429
_INDEX_LOCK_SECONDS = 10

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


def visible(svc: VerifyService, key: ApiKey) -> bool:
    """A service is the creating key's; an ``admin`` key (no tenant) sees all."""
    return tenant_of(key) is None or svc.account_sid == account_sid(key)


async def _record(
    request: Request, verifier: Verifier, shape: re.Pattern[str], prefix: str, sid: str
) -> str:
    """The record of ``sid`` under ``prefix``; 20404 for a malformed SID or none."""
    raw = await verifier.record(prefix + sid) if shape.match(sid) else None
    if raw is None:
        raise not_found(request)
    return raw


async def load_service(
    request: Request, verifier: Verifier, sid: str, key: ApiKey
) -> VerifyService:
    """The service, if ``key`` may see it; 20404 otherwise, exactly as for no service."""
    raw = await _record(request, verifier, _SERVICE_SID, SERVICE_KEY, sid)
    svc = VerifyService.from_json(raw)
    if not visible(svc, key):
        raise not_found(request)
    ROUTE.set(service_scope(svc.sid))  # this request's events: the service's webhook first
    return svc


def service_key(sid: str) -> str | None:
    """The record key of the /v2 service ``sid``; None if ``sid`` is no service SID."""
    return SERVICE_KEY + sid if _SERVICE_SID.match(sid) else None


async def service_exists(verifier: Verifier, sid: str) -> bool:
    """Whether a /v2 service of that SID exists (for the webhook settings)."""
    key = service_key(sid)
    return key is not None and await verifier.record(key) is not None


async def save_service(verifier: Verifier, svc: VerifyService) -> None:
    await verifier.keep_record(SERVICE_KEY + svc.sid, svc.to_json(), FOREVER)


# Records cannot be listed, so each account keeps an index: one record, its value
# the JSON list of its service SIDs in order of creation. Two creates under one key
# must not both read the old list and each write it back without the other's SID,
# so the read-modify-write runs under the account's lock (``Verifier.locked``: a
# crashed writer's lock lapses after _INDEX_LOCK_SECONDS). A create that finds the
# lock taken is Twilio's 20429, to be retried.


async def service_sids(verifier: Verifier, account: str) -> list[str]:
    raw = await verifier.record(INDEX_KEY + account)
    return [str(sid) for sid in json.loads(raw)] if raw else []


async def index_service(verifier: Verifier, svc: VerifyService) -> None:
    """Add ``svc`` to its account's index (once; live services only are kept)."""
    lock = INDEX_KEY + "lock:" + svc.account_sid
    async with verifier.locked("verify_services", lock, _INDEX_LOCK_SECONDS) as held:
        if not held:
            raise TwilioError(
                TOO_MANY_REQUESTS,
                429,
                "Too Many Requests",
                {"Retry-After": str(_INDEX_LOCK_SECONDS)},
            )
        sids = await service_sids(verifier, svc.account_sid)
        live = await verifier.records([SERVICE_KEY + s for s in sids])
        sids = [s for s in sids if SERVICE_KEY + s in live and s != svc.sid]
        if len(sids) >= MAX_SERVICES:
            raise invalid("FriendlyName", f"at most {MAX_SERVICES} services per API key")
        sids.append(svc.sid)
        await verifier.keep_record(
            INDEX_KEY + svc.account_sid, json.dumps(sids, separators=(",", ":")), FOREVER
        )


async def list_services(verifier: Verifier, account: str) -> list[VerifyService]:
    """The account's live services, oldest first."""
    sids = await service_sids(verifier, account)
    keys = [SERVICE_KEY + sid for sid in sids]
    found = await verifier.records(keys)
    return [VerifyService.from_json(found[k]) for k in keys if k in found]


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
