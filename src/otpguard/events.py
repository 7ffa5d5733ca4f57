"""The event model: every decision the Verifier makes becomes one Event.

An event carries a masked number and a keyed hash of the number (for
grouping), never the number itself, never a code. For the email channel the
"number" is the address: masked (``j***@e***.com``) and hashed the same way.
Events are stored in the store and logged as one JSON line each on the
``otpguard.events`` logger, except the repeats of a refusal, which are counted (``refusals.py``).
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from .email_address import mask as mask_address

log = logging.getLogger("otpguard.events")


class EventType(enum.StrEnum):
    STARTED = "verification.started"
    SENT = "verification.sent"
    RESENT = "verification.resent"
    DELIVERY_FAILED = "verification.delivery_failed"
    DELIVERY_STATUS = "verification.delivery_status"
    CHECK_PASSED = "check.passed"
    CHECK_FAILED = "check.failed"
    LOCKED = "verification.locked"
    EXPIRED = "verification.expired"
    CANCELED = "verification.canceled"
    REFUSED = "request.refused"
    FRAUD_SHADOW = "fraud.shadow"  # a rule in shadow mode would have refused
    FRAUD_SUSPENDED = "fraud.suspended"  # a prefix/country was suspended by conversion watch
    ALERT_OPENED = "alert.opened"
    ALERT_RESOLVED = "alert.resolved"
    STORE_ERROR = "store.error"
    NUMBER_BLOCKED = "number.blocked"  # a run-time block entry added (numberlists.py)
    NUMBER_ALLOWED = "number.allowed"  # a run-time allow entry added
    NUMBER_UNBLOCKED = "number.unblocked"  # a run-time entry of either kind removed


def new_event_id(now: float) -> str:
    """Sortable by time: 13 hex digits of milliseconds, then 12 random hex digits."""
    return f"{int(now * 1000):013x}{os.urandom(6).hex()}"


@dataclass(frozen=True)
class Event:
    type: str
    ts: float
    id: str = ""
    verification_id: str | None = None
    number_masked: str | None = None
    number_hash: str | None = None
    country: str | None = None
    channel: str | None = None
    client_ip: str | None = None
    reason: str | None = None  # refusal reason, delivery reason, check outcome...
    rule: str | None = None  # the rate-limit or fraud rule that fired
    provider_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # How many occurrences this event stands for: 1 for a stored event; more for the
    # repeats of a refusal that were counted, not stored (``refusals.py``).
    count: int = 1
    # The API key the verification belongs to: routes the event to that key's webhook
    # endpoint (webhooks.py). Not stored, not logged: to_dict leaves it out.
    owner: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        if all(type(v) in _ATOMIC for v in self.details.values()):
            # The usual flat details: what asdict returns, without its deep copy of
            # every value (a third of the cost of storing an event).
            data = {name: getattr(self, name) for name in _FIELDS}
            data["details"] = dict(self.details)
        else:
            data = asdict(self)
            del data["owner"]
        if self.count == 1:  # the usual case: stored and logged events stay as they were
            del data["count"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        known: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__ if k in data}
        known["details"] = dict(data.get("details") or {})
        return cls(**known)


#: Every field ``to_dict`` writes (``owner`` is never stored), in ``asdict``'s order.
_FIELDS = tuple(f.name for f in fields(Event) if f.name != "owner")
#: Values ``asdict`` would return as they are (its copies of them are equal).
_ATOMIC = frozenset({str, int, float, bool, type(None)})


def mask_number(e164: str) -> str:
    """``+447400123456`` -> ``+44******3456``: country prefix and last four digits only;
    an email address ``john@mail.example.com`` -> ``j***@m***.com``."""
    if "@" in e164:
        return mask_address(e164)
    if len(e164) <= 7:
        return "*" * len(e164)
    head = e164[:3] if e164.startswith("+") else e164[:2]
    return head + "*" * (len(e164) - len(head) - 4) + e164[-4:]


#: A Verifier listener (``Verifier(listeners=...)``, the metrics): called with every
#: event as it is recorded, never awaited; an exception it raises is logged, not raised.
EventListener = Callable[["Event"], None]


class EventOutbox(Protocol):
    """What the Verifier hands its recorded events to, awaited (the webhook outbox):
    ``enqueue`` never raises and never waits on anything but the store."""

    async def enqueue(self, events: Sequence[Event]) -> None: ...


def log_event(event: Event) -> None:
    log.info(event.to_json())
