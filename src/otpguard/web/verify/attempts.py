"""Twilio's Verification Attempts, read from otpguard's events.

An attempt is one message sent for a verification (a ``verification.sent`` or
``verification.resent`` event) of a /v2 service the key may see; it is
``converted`` once that verification was approved (a ``check.passed`` event).
Kept as long as the events (``event_retention_days``). ``channel_data.to`` is the
masked number the event holds: events never keep a whole number. ``price`` is
null: otpguard does not know what the provider charged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ...errors import InvalidRequest
from ...events import Event, EventType
from ...stores.base import EventQuery
from ..api import event_query, iso, number_hash_of
from .errors import TwilioRoute, invalid, not_found
from .forms import CHANNELS, base_url
from .paging import page_body, page_request
from .sending import SEND_EVENTS
from .services import OWNER_KEY, AuthDep, Caller, VerifyService, find_service, visible
from .shapes import attempt_sid, channel_name

LIST_FILTERS = frozenset(
    {
        "DateCreatedAfter",
        "DateCreatedBefore",
        "ChannelData.To",
        "Country",
        "Channel",
        "VerifyServiceSid",
        "VerificationSid",
        "Status",
    }
)
SUMMARY_FILTERS = frozenset(
    {"VerifyServiceSid", "DateCreatedAfter", "DateCreatedBefore", "Country", "Channel"}
)
_BATCH = 500
MAX_SCAN = 10_000  # events read for one answer; more is 60200 (narrow the dates)
_LONGEST_TTL = 601.0  # a verification is approved within code_ttl (<= 600 s) of a send


def event_id_of(sid: str) -> str | None:
    body = sid[2:]
    ok = sid.startswith("VL") and len(body) == 32 and body.startswith("0" * 7)
    return body[7:] if ok and all(c in "0123456789abcdef" for c in body) else None


@dataclass(frozen=True)
class Filters:
    query: EventQuery
    service: str | None = None
    verification: str | None = None
    channel: str | None = None
    converted: bool | None = None


def _date(name: str, raw: str) -> float:
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        raise invalid(name, "an ISO 8601 date-time like 2026-01-31T12:00:00Z") from None


def filters(call: Caller, given: dict[str, str]) -> Filters:
    verifier = call.verifier
    try:
        number_hash = number_hash_of(verifier, given.get("ChannelData.To"))
    except InvalidRequest as exc:
        raise invalid("ChannelData.To", exc.message) from None
    channel = given.get("Channel")
    if channel is not None and channel not in CHANNELS:
        raise invalid("Channel", "otpguard sends sms, whatsapp and call")
    status = given.get("Status")
    if status is not None and status.lower() not in ("converted", "unconverted"):
        raise invalid("Status", "converted or unconverted")
    since = (
        _date("DateCreatedAfter", given["DateCreatedAfter"])
        if "DateCreatedAfter" in given
        else None
    )
    until = (
        _date("DateCreatedBefore", given["DateCreatedBefore"])
        if "DateCreatedBefore" in given
        else None
    )
    query = event_query(SEND_EVENTS, number_hash, given.get("Country"), since, until)
    query = replace(query, limit=_BATCH)
    return Filters(
        query,
        service=given.get("VerifyServiceSid"),
        verification=given.get("VerificationSid"),
        channel=CHANNELS[channel].value if channel else None,
        converted=None if status is None else status.lower() == "converted",
    )


def service_of(event: Event) -> str | None:
    """The /v2 service SID an event of a verification carries (``Verification.service``)."""
    sid = event.details.get("service")
    return sid if isinstance(sid, str) else None


async def _attribute(call: Caller, events: list[Event]) -> dict[str, VerifyService]:
    """verification id -> its /v2 service, for the events' verifications the key may see.
    An event names its service; one of before events did is attributed by the record
    the /v2 API kept then (kept as long as events, so read until those are purged)."""
    verifier = call.verifier
    owners: dict[str, str] = {}
    for e in events:
        sid = service_of(e)
        if e.verification_id and sid is not None:
            owners[e.verification_id] = sid
    vids = {e.verification_id for e in events if e.verification_id}
    older = sorted(OWNER_KEY + vid for vid in vids if vid not in owners)
    if older:
        kept = await verifier.records(older)
        owners |= {key.removeprefix(OWNER_KEY): sid for key, sid in kept.items()}
    services = {sid: await find_service(verifier, sid) for sid in sorted(set(owners.values()))}
    out = {}
    for vid, sid in owners.items():
        svc = services.get(sid)
        if svc is not None and visible(svc, call.key):
            out[vid] = svc
    return out


async def converted_ids(
    call: Caller, since: float, until: float, number_hash: str | tuple[str, ...] | None
) -> set[str]:
    """The verifications approved between ``since`` and ``until`` (of the number
    whose hash, or hashes, ``number_hash`` gives: ``EventQuery.number_hash``)."""
    query = EventQuery(
        types=(EventType.CHECK_PASSED.value,),
        number_hash=number_hash,
        since=since,
        until=until,
        limit=_BATCH,
    )
    found: set[str] = set()
    for _ in range(MAX_SCAN // _BATCH):
        events = await call.verifier.events(query)
        found |= {e.verification_id for e in events if e.verification_id}
        if len(events) < _BATCH:
            return found
        query = replace(query, before_id=events[-1].id)
    raise invalid("DateCreatedAfter", f"more than {MAX_SCAN} events to read: narrow the dates")


async def scan(
    call: Caller, f: Filters, size: int, token: str | None
) -> tuple[list[tuple[Event, VerifyService, bool]], str | None]:
    """Up to ``size`` attempts, newest first, older than the event ``token``; and the
    token of the next page (None when there is none)."""
    query = replace(f.query, before_id=token)
    picked: list[tuple[Event, VerifyService]] = []
    for _ in range(MAX_SCAN // _BATCH):
        events = await call.verifier.events(query)
        owners = await _attribute(call, events)
        for e in events:
            svc = owners.get(e.verification_id or "")
            if svc is None or (f.service and svc.sid != f.service):
                continue
            if (f.verification and e.verification_id != f.verification) or (
                f.channel and e.channel != f.channel
            ):
                continue
            picked.append((e, svc))
        if len(events) < _BATCH or len(picked) >= size:
            break
        query = replace(query, before_id=events[-1].id)
    else:
        raise invalid("DateCreatedAfter", f"more than {MAX_SCAN} events to read: narrow the dates")
    more = len(picked) > size or (len(picked) == size and len(events) == _BATCH)
    picked = picked[:size]
    conv: set[str] = set()
    if picked:
        low, high = picked[-1][0].ts, picked[0][0].ts + _LONGEST_TTL
        conv = await converted_ids(call, low, high, f.query.number_hash)
    out = [(e, svc, (e.verification_id or "") in conv) for e, svc in picked]
    if f.converted is not None:
        out = [a for a in out if a[2] is f.converted]
    return out, (picked[-1][0].id if more and picked else None)


def attempt_out(request: Request, e: Event, svc: VerifyService, converted: bool) -> dict[str, Any]:
    sid = attempt_sid(e.id)
    return {
        "sid": sid,
        "account_sid": svc.account_sid,
        "service_sid": svc.sid,
        "verification_sid": e.verification_id,
        "date_created": iso(e.ts),
        "date_updated": iso(e.ts),
        "conversion_status": "converted" if converted else "unconverted",
        "channel": channel_name(e.channel or ""),
        "price": None,
        "channel_data": {"to": e.number_masked},
        "url": f"{base_url(request)}/v2/Attempts/{sid}",
    }


# -- routes ---------------------------------------------------------------------------

router = APIRouter(route_class=TwilioRoute, include_in_schema=False)


@router.get("/Attempts")
async def list_attempts(request: Request, who: AuthDep) -> Response:
    req = page_request(request, LIST_FILTERS)
    found, token = await scan(who, filters(who, req.filters), req.size, req.token)
    items = [attempt_out(request, e, svc, conv) for e, svc, conv in found]
    return JSONResponse(page_body(request, "attempts", items, req, token, token is not None))


@router.get("/Attempts/Summary")
async def attempts_summary(request: Request, who: AuthDep) -> Response:
    """Totals over every attempt the filters select (at most ``MAX_SCAN`` events)."""
    req = page_request(request, SUMMARY_FILTERS)
    if req.page or req.token or "PageSize" in request.query_params:
        raise invalid("PageSize", "the summary is not paged")
    found, _ = await scan(who, filters(who, req.filters), MAX_SCAN, None)
    total = len(found)
    converted = sum(1 for _, _, conv in found if conv)
    rate = f"{100.0 * converted / total:.2f}" if total else "0.00"
    return JSONResponse(
        {
            "total_attempts": total,
            "total_converted": converted,
            "total_unconverted": total - converted,
            "conversion_rate_percentage": rate,
            "url": f"{base_url(request)}/v2/Attempts/Summary",
        }
    )


@router.get("/Attempts/{attempt_sid}")
async def fetch_attempt(request: Request, who: AuthDep, attempt_sid: str) -> Response:
    eid = event_id_of(attempt_sid)
    if eid is None:
        raise not_found(request)
    # Event ids all have one length: the newest send below eid + "0" is eid, if kept.
    query = EventQuery(types=SEND_EVENTS, before_id=eid + "0", limit=1)
    events = [e for e in await who.verifier.events(query) if e.id == eid]
    owners = await _attribute(who, events)
    if not events or events[0].verification_id not in owners:
        raise not_found(request)
    e = events[0]
    vid = e.verification_id or ""
    conv = vid in await converted_ids(who, e.ts, e.ts + _LONGEST_TTL, e.number_hash)
    return JSONResponse(attempt_out(request, e, owners[vid], conv))
