"""What a check by id does before its comparison, as one atomic store call
(``Store.open_check``).

1. read the verification. Missing, or another API key's (``owner`` is set and the
   verification's owner is neither it nor None): ``NOT_FOUND``, nothing counted;
2. a code of another length than the verification's: ``MALFORMED``, nothing counted;
3. reserve one wrong code, as ``Store.hit`` does, under ``number_rules`` (each key a
   prefix that the verification's number completes: the caller does not know the
   number before step 1) and ``ip_rules``. Refused: ``REFUSED`` with the decision,
   nothing else counted;
4. count the attempt, as ``Store.record_attempt`` does: ``OPENED`` with its ticket
   (None when the verification is gone, which only a backend without one atomic
   step can see).

The engine compares the code with the ticket's tags afterwards and settles (an
approval, ``settlement.py``) or records the failure: in the same atomic operation
where the backend can (``Store.check_by_id``, which hands what it opened to the
engine's ``Judge`` and carries out the ``CheckVerdict``; SQLite: one transaction),
else as the operations they are.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..events import Event
from ..models import AttemptTicket, RateDecision, RateRule, Verification
from .settlement import Settlement, bookkeeping_failed

if TYPE_CHECKING:
    from .base import Store

log = logging.getLogger("otpguard.store")


class Opened(enum.StrEnum):
    NOT_FOUND = "not_found"
    MALFORMED = "malformed"
    REFUSED = "refused"
    OPENED = "opened"


@dataclass(frozen=True)
class Presented:
    """What a check by id presents to a store that judges it itself
    (``Store.judges_checks``: PostgreSQL, in one round trip): the code's tag under
    every key (``Keyring.presented``), compared with the row's tags of the current
    form; the client IP its events name; the ids of the events it may store
    (``EVENTS``' order); and until when an approval trusts the number (None: it does
    not). The engine still judges what the store returns, with the seal."""

    tags: Sequence[str]
    client_ip: str
    event_ids: Sequence[str]
    trusted_until: float | None

    #: The events a judged check may store, in ``event_ids``' order.
    EVENTS = ("check.passed", "check.failed", "verification.locked", "verification.expired")


@dataclass(frozen=True)
class CheckOpening:
    """One check by id's first step (this module's docstring)."""

    verification_id: str
    owner: str | None
    code_length: int
    number_rules: Sequence[RateRule]  # keys completed by the verification's number
    ip_rules: Sequence[RateRule]
    max_attempts: int
    now: float
    presented: Presented | None = None  # for a store that judges checks itself

    def visible(self, v: Verification | None) -> Verification | None:
        """``v`` if this check may see it (step 1), else None."""
        if v is None or (self.owner is not None and v.owner not in (self.owner, None)):
            return None
        return v

    def rules(self, number: str) -> list[RateRule]:
        """The reservation's rules for the verification's ``number`` (step 3)."""
        completed = [replace(r, key=r.key + number) for r in self.number_rules]
        return [*completed, *self.ip_rules]


@dataclass(frozen=True)
class CheckOpened:
    outcome: Opened
    verification: Verification | None = None  # as read (NOT_FOUND: None)
    refusal: RateDecision | None = None  # REFUSED
    ticket: AttemptTicket | None = None  # OPENED (None: gone in between)


@dataclass(frozen=True)
class CheckVerdict:
    """What the engine decided on a ``CheckOpened``, for the store to carry out: an
    approval (``settlement``, its events its own) or a failure (``events``; at
    ``lock_at`` attempts the verification locks, and ``locked`` is stored too if this
    call locked it); ``release``: the reservation's keys, given back at the opening's
    ``now`` (nothing was compared, or the verification is gone)."""

    settlement: Settlement | None = None
    events: Sequence[Event] = ()
    lock_at: int | None = None
    locked: Sequence[Event] = ()
    release: Sequence[str] = ()


#: The engine's decision on what ``open_check`` found. Pure: a backend may call it
#: again when it retries its operation (SQLite, on a busy database).
Judge = Callable[[CheckOpened], CheckVerdict]


@dataclass(frozen=True)
class CheckClosed:
    """A check by id, opened and decided (``Store.check_by_id``)."""

    opened: CheckOpened
    verdict: CheckVerdict
    approved: bool = False  # the settlement approved (exactly one caller)
    locked: bool = False  # this call locked the verification at ``lock_at``
    released: bool = True  # False: the give-back failed (the reservation stays counted)

    def stored(self) -> list[Event]:
        """The failure's events the store kept (not the settlement's)."""
        return [*self.verdict.events, *(self.verdict.locked if self.locked else ())]


async def open_in_steps(store: Store, o: CheckOpening) -> CheckOpened:
    """``Store.open_check`` as three operations, each atomic on its own."""
    v = o.visible(await store.get_verification(o.verification_id))
    if v is None:
        return CheckOpened(Opened.NOT_FOUND)
    if v.code_length != o.code_length:
        return CheckOpened(Opened.MALFORMED, v)
    decision = await store.hit(o.rules(v.to), o.now)
    if not decision.allowed:
        return CheckOpened(Opened.REFUSED, v, decision)
    ticket = await store.record_attempt(v.id, o.max_attempts, o.now)
    return CheckOpened(Opened.OPENED, v, ticket=ticket)


async def in_steps(store: Store, o: CheckOpening, judge: Judge) -> CheckClosed:
    """``Store.check_by_id`` as the operations it is made of, each atomic on its own:
    ``open_check``, then the verdict ``carried_out``."""
    opened = await store.open_check(o)
    return await carried_out(store, opened, judge(opened), o.now)


async def carried_out(
    store: Store, opened: CheckOpened, verdict: CheckVerdict, now: float
) -> CheckClosed:
    """``verdict`` carried out as separate operations: ``settle``, or
    ``lock_if_exhausted`` and ``add_events``, or ``release`` at ``now`` (whose failure
    only leaves the reservation counted: ``released`` False)."""
    approved = locked = False
    if verdict.settlement is not None:
        approved = await store.settle(verdict.settlement)
    if verdict.lock_at is not None and opened.ticket is not None:
        vid = opened.ticket.verification.id
        locked = await store.lock_if_exhausted(vid, verdict.lock_at, now)
    closed = CheckClosed(opened, verdict, approved, locked)
    if stored := closed.stored():
        await store.add_events(stored)
    if verdict.release:
        try:
            await store.release(list(dict.fromkeys(verdict.release)), now)
        except StorageError:
            return replace(closed, released=False)
    return closed


def stored_events(opened: CheckOpened, rows: Sequence[dict[str, Any]]) -> list[Event]:
    """The events a store that judged ``opened`` itself stored (``rows``: each as its
    ``to_dict``), as the engine announces them: with the verification's owner."""
    owner = opened.verification.owner if opened.verification is not None else None
    return [replace(Event.from_dict(e), owner=owner) for e in rows]


def judged_closed(
    opened: CheckOpened, verdict: CheckVerdict, settled: int, locked: bool, stored: list[Event]
) -> CheckClosed:
    """What the engine's ``verdict`` on ``opened`` comes to, as a store that judges
    checks itself carried it out in its one call: ``settled`` (``settle``'s 0, 1 or 2),
    ``locked``, and the events it ``stored``, which are the ones announced. Where the
    engine and the store differ (a row whose seal fails: its number or channel changed
    in the database), the engine's verdict stands and nothing approved counts."""
    passed, failed, lock, expired = Presented.EVENTS
    by_type = {e.type: e for e in stored}
    if settled and verdict.settlement is None:
        assert opened.verification is not None
        log.error(
            "verification %s: its code matched but its seal did not (its number or "
            "channel changed in the database); answered as a wrong code",
            opened.verification.id,
        )
    if settled == 2 and opened.verification is not None:
        bookkeeping_failed(opened.verification.id)
    if verdict.settlement is not None:
        kept = [by_type[passed]] if passed in by_type else list(verdict.settlement.events)
        settlement = replace(verdict.settlement, events=kept)
        return CheckClosed(opened, replace(verdict, settlement=settlement), settled != 0)
    events = [by_type[t] for t in (failed, expired) if t in by_type]
    locks = [by_type[lock]] if lock in by_type else list(verdict.locked)
    judged = replace(verdict, events=events or list(verdict.events), locked=locks)
    return CheckClosed(opened, judged, False, locked and verdict.lock_at is not None)
