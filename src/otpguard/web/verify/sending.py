"""Sends under a /v2 service, as Twilio makes them: one verification per number.

A create for a number that has a pending verification of the same service and
channel re-sends on it (same ``VE`` SID, :meth:`Verifier.resend` with
``keep_earlier``): Twilio sends the same code again, which otpguard cannot (it
keeps only the code's HMAC), so it sends a new one and every code sent for the
verification stays valid until the verification expires, which a resend does not
move. Which service a verification belongs to is in its row
(``Verification.service``, given to :meth:`Verifier.start`): the number's newest
unexpired verifications are read once and narrowed to the service, so a create
costs one store read beside the engine's own, and a check by To finds a locked one
(60202) the same way.
"""

from __future__ import annotations

from ...destinations import parse_destination
from ...errors import Conflict, InvalidRequest
from ...events import EventType
from ...models import Channel, Status, Verification
from ...purpose import DEFAULT, Binding
from ...service import Verifier
from ...stores.base import EventQuery
from .services import ServiceCall, in_service

SEND_EVENTS = (EventType.SENT.value, EventType.RESENT.value)


async def current(call: ServiceCall, to: str) -> Verification | None:
    """The number's latest verification under the service while it is unexpired
    (pending, approved, canceled or locked), None if none or ``to`` is no number.
    One store read: the number's newest verifications, each row naming its service."""
    verifier = call.verifier
    try:
        e164 = parse_destination(to, None, verifier.settings.default_region).e164
    except InvalidRequest:  # no number and no address
        return None
    found = await verifier.recent(e164, owner=call.tenant, any_status=True)
    mine = await in_service(verifier, call.service.sid, found)
    return mine[0] if mine else None


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
    return await verifier.start(
        to,
        channel,
        client_ip=device_ip,
        locale=locale,
        code_length=svc.code_length,
        service_name=name,
        owner=call.key.id,
        service=svc.sid,
        **bound.args(),
    )


async def send_times(verifier: Verifier, v: Verification) -> list[tuple[str, float, str]]:
    """``(event id, time, channel)`` of each message sent for ``v``, oldest first:
    a start just made knows its one send's event (``Verification.sent_event``);
    otherwise from the events (at most a few: a verification has at most 5 sends)."""
    if v.sends == 1 and v.sent_event is not None:
        return [(v.sent_event, v.updated_at, v.channel.value)]
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
