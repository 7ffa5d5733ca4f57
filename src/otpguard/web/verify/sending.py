"""Sends under a /v2 service, as Twilio makes them: one verification per number.

A create for a number that has a pending verification of the same service and
channel re-sends on it (same ``VE`` SID, :meth:`Verifier.resend` with
``keep_earlier``): Twilio sends the same code again, which otpguard cannot (it
keeps only the code's HMAC), so it sends a new one and every code sent for the
verification stays valid until the verification expires, which a resend does not
move. The verification of each (service, number) is a flag that lives until it
expires; a check by To finds a locked one through it (60202).
"""

from __future__ import annotations

from ...destinations import parse_destination
from ...errors import Conflict, InvalidRequest, NotFound
from ...events import EventType
from ...models import Channel, Status, Verification
from ...purpose import DEFAULT, Binding
from ...service import Verifier
from ...stores.base import EventQuery
from .services import OWNER_KEY, ServiceCall, VerifyService

PENDING_KEY = "verify_compat:number:"  # + service SID + ":" + number hash -> VE SID
SEND_EVENTS = (EventType.SENT.value, EventType.RESENT.value)


def number_keys(verifier: Verifier, svc: VerifyService, e164: str) -> list[str]:
    """The records of the number's verification under the service, one per listed
    key, newest first: each is read, only the first is written (a record made before
    a key was added is under an older key's hash, and still found)."""
    return [f"{PENDING_KEY}{svc.sid}:{h}" for h in verifier.number_hashes(e164)]


async def current(call: ServiceCall, to: str) -> Verification | None:
    """The number's latest verification under the service while it is unexpired
    (pending, approved, canceled or locked), None if none or ``to`` is no number."""
    verifier = call.verifier
    try:
        e164 = parse_destination(to, None, verifier.settings.default_region).e164
    except InvalidRequest:  # no number and no address
        return None
    keys = number_keys(verifier, call.service, e164)
    found = await verifier.records(keys)
    vid = next((found[k] for k in keys if k in found), None)  # the newest key's first
    if vid is None:
        return None
    try:
        v = await verifier.get(vid, owner=call.tenant)
    except NotFound:
        return None
    return v if verifier.clock() < v.expires_at else None


async def send(
    call: ServiceCall,
    to: str,
    channel: Channel,
    *,
    device_ip: str | None,
    locale: str | None,
    name: str,
    bound: Binding = DEFAULT,
) -> Verification:
    """Re-send on the number's pending verification of this channel and binding (the
    same transaction), or start one."""
    verifier, svc = call.verifier, call.service
    pending = await current(call, to)
    if (
        pending is not None
        and pending.status is Status.PENDING
        and pending.channel is channel
        and pending.binding == bound
    ):
        try:
            return await verifier.resend(
                pending.id, client_ip=device_ip, owner=call.tenant, keep_earlier=True
            )
        except Conflict:
            pass  # approved or canceled in the meantime: a new verification
    v = await verifier.start(
        to,
        channel,
        client_ip=device_ip,
        locale=locale,
        code_length=svc.code_length,
        service_name=name,
        owner=call.key.id,
        **bound.args(),
    )
    # Which service it belongs to, kept as long as its events (the Attempts list
    # reads them), and the number's verification under the service until it expires.
    keep = verifier.clock() + verifier.settings.event_retention_days * 86400.0
    await verifier.keep_record(OWNER_KEY + v.id, svc.sid, keep)
    await verifier.keep_record(number_keys(verifier, svc, v.to)[0], v.id, v.expires_at)
    return v


async def send_times(verifier: Verifier, v: Verification) -> list[tuple[str, float, str]]:
    """``(event id, time, channel)`` of each message sent for ``v``, oldest first,
    from the events (at most a few: a verification has at most 5 sends)."""
    query = EventQuery(
        types=SEND_EVENTS,
        number_hash=verifier.number_hashes(v.to),  # sends from before a key was added too
        since=v.created_at,
        limit=100,
    )
    events = await verifier.events(query)
    sends = [
        (e.id, e.ts, e.channel or v.channel.value) for e in events if e.verification_id == v.id
    ]
    return sorted(sends, key=lambda s: s[1])
