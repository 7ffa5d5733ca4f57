"""The check path: ``check`` by id or by number, and what an approval sets off.

Order of a check::

    well-formed code -> find verification -> reserve a wrong code under the
    failed-check caps (atomic, all or nothing) -> count the attempt (atomic, before
    comparing) -> compare (constant time) -> approve (atomic, exactly once, only the
    tag compared) and give the reservation back | keep it, lock at the cap

By number, one wrong code is reserved before anything is looked up, then the
number's newest pending verifications of the same API key are tried in turn
(``PENDING_PER_CHECK``), each after a reservation of its own; every failure is
the same ``NotFound``. A verification belongs to the key that started it: with
``owner``, another key's is not found.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence

from .. import limits, tags
from ..codes import is_well_formed
from ..destinations import Destination, destination_of, is_email, parse_destination
from ..errors import InvalidRequest, NotFound, RateLimited, StorageError
from ..events import Event, EventType, new_event_id
from ..models import AttemptOutcome, Channel, RateRule, Status, Verification
from ..purpose import Binding, bind
from ..stores.opening import (
    CheckClosed,
    CheckOpened,
    CheckOpening,
    CheckVerdict,
    Opened,
    Presented,
    carried_out,
)
from ..stores.settlement import Settlement
from .base import NO_MATCH, PENDING_PER_CHECK, CheckResult, Selector, VerifierBase
from .plan import plan_of

log = logging.getLogger("otpguard.service")
GIVE_BACK_FAILED = "a failed-check reservation could not be given back (it stays counted)"


class Checking(VerifierBase):
    """Check codes; approve each verification exactly once."""

    async def check(
        self,
        code: str,
        *,
        verification_id: str | None = None,
        to: str | None = None,
        client_ip: str | None = None,
        started: float | None = None,
        owner: str | None = None,
        select: Selector | None = None,
        per_ip: bool = True,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> CheckResult:
        """Approve exactly once: pending, unexpired, and the code matches.

        ``owner`` is the API key asking (None: any, for embedded use and admin keys):
        another key's verification is not found (one made without a key, in-process,
        is anyone's). By ``to``, the number's newest
        ``PENDING_PER_CHECK`` pending verifications of that owner are tried, newest
        first (``select`` may narrow them, e.g. to one /v2 service); every failure by
        number (no pending code, wrong code or length, locked, expired) is the same
        ``NotFound`` and counts as a wrong code, so it tells nothing about the number.
        ``per_ip=False``: a caller with no end user's IP (the /v2 API by number): only
        the per-number cap applies, not the shared ``unknown`` IP bucket.
        ``purpose``, ``amount``, ``currency`` and ``payee`` must be what the start
        named (omitted: ``login``); anything else is a wrong code, counted as one.

        A failing check (wrong code, unknown id or number, locked, expired, limited)
        returns no sooner than ``failed_check_floor`` seconds after it began, so its
        timing does not tell which failure it was (measured by bench/timing.py).
        ``started`` (a ``time.monotonic()`` reading) is when it began for a caller
        that did work of its own first, such as an API route."""
        started = time.monotonic() if started is None else started
        try:
            binding = bind(purpose, amount, currency, payee)
            now, ip = self.clock(), limits.normalize_ip(client_ip)
            self._well_formed(code, verification_id, to)
            if to is not None:
                result = await self._check_number(code, to, ip, now, owner, select, per_ip, binding)
            else:
                assert verification_id is not None
                result = await self._check_id(code, verification_id, ip, now, owner, binding)
        except (NotFound, InvalidRequest, RateLimited):
            await self.pad_failed_check(started)
            raise
        if not result.valid:
            await self.pad_failed_check(started)
        return result

    async def pad_failed_check(self, started: float) -> None:
        """Sleep until ``failed_check_floor`` seconds after ``started`` (a
        ``time.monotonic()`` reading): the API routes call it for every failing check
        they answer, whatever failed, so that no failure is faster than another."""
        floor = self.settings.failed_check_floor
        if floor <= 0:
            return
        # The event loop's timers have millisecond granularity (the selector rounds a
        # timeout up to whole ms), so the wake-up overshoots by the timeout's fraction
        # of a millisecond. Aiming at a whole-millisecond deadline makes that overshoot
        # depend only on when the sleep starts, not on how long the check worked.
        deadline = math.ceil((started + floor) * 1000) / 1000
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def _well_formed(self, code: str, verification_id: str | None, to: str | None) -> None:
        """Exactly one of an id and a number, and a code of 6-10 ASCII digits."""
        if (verification_id is None) == (to is None):
            raise InvalidRequest("give exactly one of 'id' or 'to'")
        if not isinstance(code, str) or not any(is_well_formed(code, n) for n in range(6, 11)):
            raise InvalidRequest(
                f"'code' must be exactly {self.settings.code_length} ASCII digits (0-9)"
            )

    async def _check_id(
        self,
        code: str,
        verification_id: str,
        ip: str,
        now: float,
        owner: str | None,
        binding: Binding,
    ) -> CheckResult:
        """A check by id: another key's verification is exactly as if it did not exist.
        Its read, wrong-code reservation, attempt, comparison and approval or failure
        are one store call (``check_by_id``) where the backend can do them at once."""
        opening = CheckOpening(
            verification_id,
            owner,
            len(code),
            limits.number_failed_check_rules(self.settings.limits, ""),
            limits.ip_failed_check_rules(self.settings.limits, ip),
            self.settings.max_attempts,
            now,
            self._presented(verification_id, code, binding, ip, now),
        )
        judge = functools.partial(
            self._verdict, code, binding, ip, now, opening.rules, give_back=True
        )
        closed = await self.store.check_by_id(opening, judge)
        v = closed.opened.verification
        if v is None:
            # Cost one HMAC like a real comparison so an unknown id is not faster to probe.
            self.keyring.verify("", "", "", "", "", code, binding.tag_parts())
            raise NotFound("no pending verification for that id or number")
        if closed.opened.outcome is Opened.MALFORMED:
            raise InvalidRequest(f"'code' must be exactly {v.code_length} ASCII digits (0-9)")
        if (refusal := closed.opened.refusal) is not None:
            number = parse_destination(v.to, v.channel, self.settings.default_region)
            refused = RateLimited(str(refusal.rule), refusal.retry_after)
            raise await self._refuse(refused, now, number, ip, v.channel)
        if not closed.released:
            log.warning(GIVE_BACK_FAILED)
        result = await self._result(closed, opening.rules(v.to), now, give_back=True)
        if result is None:
            raise NotFound("no pending verification for that id or number")
        return result

    def _presented(
        self, verification_id: str, code: str, binding: Binding, ip: str, now: float
    ) -> Presented | None:
        """What a check by id hands a store that judges it itself (None: another)."""
        if not self.store.judges_checks:
            return None
        return Presented(
            self.keyring.presented(verification_id, code, binding.tag_parts()),
            ip,
            [new_event_id(now) for _ in Presented.EVENTS],
            self._trusted_until(now),
        )

    def _trusted_until(self, now: float) -> float | None:
        """Until when an approval at ``now`` trusts the number (None: trusted_days 0)."""
        days = self.settings.trusted_days
        return now + days * 86400.0 if days > 0 else None

    def _verdict(
        self,
        code: str,
        binding: Binding,
        ip: str,
        now: float,
        rules_of: Callable[[str], Sequence[RateRule]],
        opened: CheckOpened,
        *,
        give_back: bool,
    ) -> CheckVerdict:
        """The engine's decision on an opened check (``opening.Judge``): the comparison
        with the attempt's tags, and the approval or failure it sets off. Pure (no
        store call). ``binding`` is what the check names: another purpose, amount or
        payee fails as a wrong code. ``rules_of(number)``: the failed-check rules the
        comparison was reserved under, given back on an approval, and with
        ``give_back`` (by id) also when nothing was compared (by number every failure
        counts the same). At the last attempt a wrong code locks the verification."""
        v, ticket = opened.verification, opened.ticket
        if opened.outcome is not Opened.OPENED or v is None:
            return CheckVerdict()
        release = [r.key for r in rules_of(v.to)] if give_back else []
        if ticket is None:  # gone in between: nothing was compared
            return CheckVerdict(release=release)
        v = ticket.verification
        events = []
        if ticket.outcome is AttemptOutcome.EXPIRED:
            events.append(self._event(EventType.EXPIRED, now, v=v, client_ip=ip))
        bound = binding.tag_parts()
        if ticket.outcome is not AttemptOutcome.COUNTED:
            tags.matches(self.keyring, v, code, bound)  # the cost of a comparison
            # LOCKED leaves a pending status as it is: the checks still in flight decide.
            return CheckVerdict(events=events, release=release)
        if tags.matches(self.keyring, v, code, bound):
            approved = v.with_(status=Status.APPROVED, updated_at=now)
            event = self._event(EventType.CHECK_PASSED, now, v=approved, client_ip=ip)
            return CheckVerdict(self._settlement(approved, now, rules_of(v.to), event))
        details = {"attempts": v.attempts}  # counted, this one included
        failed = self._event(EventType.CHECK_FAILED, now, v=v, client_ip=ip, details=details)
        max_attempts = self.settings.max_attempts
        if v.attempts < max_attempts:
            return CheckVerdict(events=[failed])
        locked = v.with_(status=Status.MAX_ATTEMPTS_REACHED, updated_at=now)
        lock = self._event(EventType.LOCKED, now, v=locked, client_ip=ip)
        return CheckVerdict(events=[failed], lock_at=max_attempts, locked=[lock])

    async def _result(
        self, closed: CheckClosed, rules: Sequence[RateRule], now: float, *, give_back: bool
    ) -> CheckResult | None:
        """The answer to a judged check, its events handed on (None: the verification
        is gone). An approval answers "approved" once it committed, whatever fails
        after (logged and lost, never a 503). A right code that lost its race (approved,
        resent or expired in between) gives its reservation back with ``give_back``."""
        ticket, verdict = closed.opened.ticket, closed.verdict
        if ticket is None:
            return None
        v = ticket.verification
        if verdict.settlement is not None:
            if not closed.approved:
                if give_back:
                    await self._give_back(rules, now)
                current = await self.store.get_verification(v.id) or v
                return CheckResult(False, current.status, self._remaining(current), current)
            approved = v.with_(status=Status.APPROVED, updated_at=now)
            try:
                await self.announce(*verdict.settlement.events)
            except StorageError:
                log.warning("approval of %s recorded; its bookkeeping failed", v.id)
            return CheckResult(True, Status.APPROVED, self._remaining(approved), approved)
        await self.announce(*closed.stored())
        if verdict.lock_at is not None:  # the last attempt, and a wrong code
            if closed.locked:
                v = v.with_(status=Status.MAX_ATTEMPTS_REACHED, updated_at=now)
            else:  # another check approved or locked it first
                v = await self.store.get_verification(v.id) or v
        elif ticket.outcome is not AttemptOutcome.COUNTED:
            return CheckResult(False, v.status, 0, v)
        return CheckResult(False, v.status, self._remaining(v), v)

    async def _check_number(
        self,
        code: str,
        to: str,
        ip: str,
        now: float,
        owner: str | None,
        select: Selector | None,
        per_ip: bool,
        binding: Binding,
    ) -> CheckResult:
        """A check by number. One wrong code is reserved before anything is looked up
        (so "no pending code" counts like any failure), one more before each further
        comparison; only an approval gives one back. Every failure answers the same."""
        number = parse_destination(to, None, self.settings.default_region)
        rules = limits.failed_check_rules(self.settings.limits, number.e164, ip if per_ip else None)
        await self._reserve(rules, now, number, ip, None)
        pending = await self.store.list_pending(
            number.e164, now, owner=owner, limit=PENDING_PER_CHECK
        )
        if select is not None:
            pending = await select(pending)
        compared = 0
        for v in pending:
            if not is_well_formed(code, v.code_length):
                continue  # a code of another length is simply not this one
            if compared and not (await self.store.hit(rules, now)).allowed:
                break  # no room for another comparison: a failure like the others
            compared += 1
            ticket = await self.store.record_attempt(v.id, self.settings.max_attempts, now)
            opened = CheckOpened(Opened.OPENED, v, ticket=ticket)
            verdict = self._verdict(
                code, binding, ip, now, lambda _: rules, opened, give_back=False
            )
            closed = await carried_out(self.store, opened, verdict, now)
            result = await self._result(closed, rules, now, give_back=False)
            if result is not None and result.valid:
                return result
        if not compared:
            # The cost of a comparison.
            self.keyring.verify("", "", "", "", "", code, binding.tag_parts())
            await self.emit(
                self._event(
                    EventType.CHECK_FAILED, now, number=number, client_ip=ip, reason="no_match"
                )
            )
        raise NotFound(NO_MATCH)

    async def _reserve(
        self,
        rules: Sequence[RateRule],
        now: float,
        number: Destination,
        ip: str,
        channel: Channel | None,
    ) -> None:
        """Count a wrong code before the comparison, in the atomic step that decides
        the caps (a reservation, given back when the code is right): concurrent wrong
        codes can never pass a cap between a peek and a record."""
        reserved = await self.store.hit(rules, now)
        if not reserved.allowed:
            assert reserved.rule is not None
            raise await self._refuse(
                RateLimited(reserved.rule, reserved.retry_after), now, number, ip, channel
            )

    async def _give_back(self, rules: Sequence[RateRule], now: float) -> None:
        """Release the wrong-code reservation of ``rules`` made at ``now``. If the store
        fails here the failure stays counted: stricter, never looser."""
        try:
            await self.store.release(list(dict.fromkeys(r.key for r in rules)), now)
        except StorageError:
            log.warning(GIVE_BACK_FAILED)

    def _settlement(
        self, v: Verification, now: float, rules: Sequence[RateRule], event: Event
    ) -> Settlement:
        """The approval of ``v`` and its bookkeeping: the wrong-code reservation of
        ``rules`` given back, ``event`` stored, and what ``plan_of`` says the number's
        approval sets off: the refund and the earned room in every admission bucket
        (unless the number was trusted, whose sends were not counted), the number
        trusted from now on, and the conversion watch's counters."""
        reserved = list(dict.fromkeys(r.key for r in rules))
        plain = Settlement(v.id, now, v.code_hash, reserved, (event,))
        plan = plan_of(self, v)
        if not plan.trusted:
            return plain  # not counted (allowlisted; no country)
        return dataclasses.replace(
            plain,
            number=None if is_email(destination_of(v)) else v.to,
            buckets=plan.buckets,
            refund=v.sends,
            trusted=plan.trusted,
            trusted_until=self._trusted_until(now),
            counters=plan.counters,
        )
