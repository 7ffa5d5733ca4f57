"""The SQL base: every operation the SQLite and PostgreSQL stores run the same way.

A backend subclasses :class:`SQLStore` and provides the dialect (``sql.SQLDialect``):
``_run`` (a cursor, in a transaction or not), JSON in and out, the batched DELETE, and
advisory locks where its transactions need them. What is really its own stays in its
module: SQLite's WAL and checkpoints; PostgreSQL's pool, outage probe, migrations and
server-side functions. Both count rate windows from ``rate_log``'s running count per
key (``rate_log.py``). A backend may replace any operation here
with a faster one of its own (PostgreSQL folds some into one statement).

Statements use ``?``; each method says its transaction mode (``WRITE`` when it reads
before it writes). Error translation is the contract's (``Store.__init_subclass__``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from .. import counters
from ..models import (
    AttemptOutcome,
    AttemptTicket,
    Bucket,
    RateDecision,
    RateRule,
    Status,
    Verification,
)
from . import counts_sql
from .base import Started, Store, hit_rules
from .opening import CheckClosed, CheckOpened, CheckOpening, Judge, Opened
from .settlement import Settlement, bookkeeping_failed
from .sql import (
    SELECT_V,
    V_COLUMNS,
    V_PLACEHOLDERS,
    WRITE,
    Cursor,
    Row,
    marks,
    verification_from_row,
    verification_values,
)
from .sql_lists import UPSERT_FLAG, SQLLists
from .sql_records import EVENT_INSERT, SQLRecords
from .sql_services import SQLServices
from .webhooks_sql import SQLWebhooks

#: A check counted before the comparison, as one conditional UPDATE (params: now, now,
#: now, id, now, max_attempts): an expired pending row becomes expired, an unexpired one
#: under the cap gains an attempt; anything else is left as it is.
ATTEMPT_UPDATE = (
    "UPDATE verifications SET "  # noqa: S608 - constant
    "status = CASE WHEN expires_at <= ? THEN 'expired' ELSE status END, "
    "attempts = CASE WHEN expires_at <= ? THEN attempts ELSE attempts + 1 END, "
    "updated_at = ? WHERE id = ? AND status = 'pending' AND (expires_at <= ? OR attempts < ?) "
    f"RETURNING {V_COLUMNS}"
)
#: settle's approval: approve's conditions, or the compared tags plus a kept resend's
#: (params: now, id, now, code_hash, prefix, prefix).
SETTLE_APPROVE = (
    "UPDATE verifications SET status = 'approved', updated_at = ? "
    "WHERE id = ? AND status = 'pending' AND expires_at > ? "
    "AND (code_hash = ? OR substr(code_hash, 1, length(?)) = ?)"
)
#: A pending verification at its last attempt locks (params: now, id, max_attempts).
LOCK_EXHAUSTED = (
    "UPDATE verifications SET status = 'max_attempts_reached', updated_at = ? "
    "WHERE id = ? AND status = 'pending' AND attempts >= ?"
)
CREATE_V = f"INSERT INTO verifications ({V_COLUMNS}) VALUES ({marks(V_PLACEHOLDERS)})"  # noqa: S608 - constant names; values are bound
_PENDING = f"{SELECT_V} WHERE to_number = ? AND status = 'pending' AND expires_at > ?"
_UNEXPIRED = f"{SELECT_V} WHERE to_number = ? AND expires_at > ?"


def ticket(row: Row | None, changed: bool) -> AttemptTicket | None:
    """What ``record_attempt`` answers for the row after it: ``changed`` when the
    conditional update counted the attempt (or expired the row)."""
    if row is None:
        return None
    v = verification_from_row(row)
    if changed:
        outcome = AttemptOutcome.EXPIRED if v.status is Status.EXPIRED else AttemptOutcome.COUNTED
        return AttemptTicket(outcome, v)
    if v.status is not Status.PENDING:
        return AttemptTicket(AttemptOutcome.NOT_PENDING, v)
    # Pending and unexpired (else the update had expired it), at the cap: no attempt
    # left; the check that counted the last one approves or locks.
    return AttemptTicket(AttemptOutcome.LOCKED, v)


class SQLStore(SQLRecords, SQLLists, SQLWebhooks, SQLServices, Store):
    """The shared operations; a backend adds the dialect and the rate windows."""

    async def health(self) -> None:
        await self._run(lambda cur: cur.one("SELECT 1"))

    # -- verifications ------------------------------------------------------------

    async def create_verification(self, v: Verification) -> None:
        await self._run(lambda cur: cur.run(CREATE_V, verification_values(v)))

    async def _verification(self, sql: str, params: Sequence[Any]) -> Verification | None:
        row = await self._run(lambda cur: cur.one(sql, params))
        return None if row is None else verification_from_row(row)

    async def get_verification(self, verification_id: str) -> Verification | None:
        return await self._verification(f"{SELECT_V} WHERE id = ?", (verification_id,))

    async def find_pending(self, to: str, now: float) -> Verification | None:
        sql = f"{_PENDING} ORDER BY created_at DESC, id DESC LIMIT 1"
        return await self._verification(sql, (to, now))

    async def list_pending(
        self, to: str, now: float, *, owner: str | None, limit: int, any_status: bool = False
    ) -> list[Verification]:
        sql, params = (_UNEXPIRED if any_status else _PENDING), [to, now]
        if owner is not None:
            sql += " AND (owner = ? OR owner IS NULL)"
            params.append(owner)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self._run(lambda cur: cur.all(sql, [*params, max(0, limit)]))
        return [verification_from_row(row) for row in rows]

    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        return await self._run(
            lambda cur: self._attempt_in(cur, verification_id, max_attempts, now), WRITE
        )

    async def _attempt_in(
        self, cur: Cursor, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        params = (now, now, now, verification_id, now, max_attempts)
        row = await cur.one(ATTEMPT_UPDATE, params)
        if row is not None:
            return ticket(row, True)
        sql = f"{SELECT_V} WHERE id = ?{self.for_update}"
        return ticket(await cur.one(sql, (verification_id,)), False)

    async def open_check(self, o: CheckOpening) -> CheckOpened:
        """``opening.py``'s four steps in one transaction."""
        return await self._run(lambda cur: self._open_in(cur, o), WRITE)

    async def _open_in(self, cur: Cursor, o: CheckOpening) -> CheckOpened:
        row = await cur.one(f"{SELECT_V} WHERE id = ?{self.for_update}", (o.verification_id,))
        v = o.visible(None if row is None else verification_from_row(row))
        if v is None:
            return CheckOpened(Opened.NOT_FOUND)
        if v.code_length != o.code_length:
            return CheckOpened(Opened.MALFORMED, v)
        rules = o.rules(v.to)
        decision = await self._hit_in(cur, rules, o.now) if rules else RateDecision(True)
        if not decision.allowed:
            return CheckOpened(Opened.REFUSED, v, decision)
        opened = await self._attempt_in(cur, v.id, o.max_attempts, o.now)
        return CheckOpened(Opened.OPENED, v, ticket=opened)

    async def _check_in(self, cur: Cursor, o: CheckOpening, judge: Judge) -> CheckClosed:
        """``Store.check_by_id`` inside one transaction: opened, judged, carried out."""
        opened = await self._open_in(cur, o)
        verdict = judge(opened)
        s, lock_at = verdict.settlement, verdict.lock_at
        approved = s is not None and await self._settle_in(cur, s)
        params = (o.now, o.verification_id, lock_at)
        locked = lock_at is not None and await cur.run(LOCK_EXHAUSTED, params) == 1
        closed = CheckClosed(opened, verdict, approved, locked)
        if closed.stored():
            await self._store_events(cur, closed.stored())
        if verdict.release:
            keys = list(dict.fromkeys(verdict.release))
            await self._lock_keys(cur, keys)
            await self._release_in(cur, keys, o.now, 1)
        return closed

    async def approve(self, verification_id: str, now: float, *, code_hash: str) -> bool:
        return await self._changed(
            "UPDATE verifications SET status = 'approved', updated_at = ? "
            "WHERE id = ? AND status = 'pending' AND expires_at > ? AND code_hash = ?",
            (now, verification_id, now, code_hash),
        )

    async def settle(self, s: Settlement) -> bool:
        return await self._run(lambda cur: self._settle_in(cur, s), WRITE)

    async def _settle_in(self, cur: Cursor, s: Settlement) -> bool:
        prefix = s.code_hash + " "
        params = (s.now, s.verification_id, s.now, s.code_hash, prefix, prefix)
        if not await cur.run(SETTLE_APPROVE, params):
            return False
        # The bookkeeping in a savepoint: if it fails, the approval still commits.
        await cur.run("SAVEPOINT settle")
        try:
            await self._settle_bookkeeping(cur, s)
        except Exception as exc:
            if self.backend_error(exc) is None:
                raise
            await cur.run("ROLLBACK TO SAVEPOINT settle")
            bookkeeping_failed(s.verification_id)
        await cur.run("RELEASE SAVEPOINT settle")
        return True

    async def _settle_bookkeeping(self, cur: Cursor, s: Settlement) -> None:
        """Steps 2-4 of ``settlement.py``, after the approval, in its transaction."""
        counted = (r.key for r in s.counters)  # recorded under their locks too (rate_log.py)
        await self._lock_keys(cur, [*s.reserved, *(b.key for b in s.buckets), *counted])
        if s.reserved:
            await self._release_in(cur, list(dict.fromkeys(s.reserved)), s.now, 1)
        if s.events:
            await self._store_events(cur, s.events)
        flags = await self._flags_in(cur, s.flag_keys(), s.now)
        if s.listed(flags):
            return
        if s.credits(flags):
            await self._credit_in(cur, s.buckets, s.refund, s.now)
        if s.trusted and s.trusted_until is not None:
            await cur.run(UPSERT_FLAG, (s.trusted[0], "1", s.trusted_until))
        if s.counters:
            await self._record_in(cur, list(dict.fromkeys(r.key for r in s.counters)), s.now)

    async def lock_if_exhausted(self, verification_id: str, max_attempts: int, now: float) -> bool:
        return await self._changed(LOCK_EXHAUSTED, (now, verification_id, max_attempts))

    async def replace_code(
        self, verification_id: str, key_id: str, code_hash: str, now: float,
        expires_at: float, resend_available_at: float, *, replaces: str,
    ) -> Verification | None:  # fmt: skip
        return await self._verification(
            "UPDATE verifications SET key_id = ?, code_hash = ?, expires_at = ?, "  # noqa: S608 - constant names; values are bound
            "resend_available_at = ?, updated_at = ?, sends = sends + 1 "
            "WHERE id = ? AND status = 'pending' AND expires_at > ? "
            f"AND resend_available_at <= ? AND code_hash = ? RETURNING {V_COLUMNS}",
            (key_id, code_hash, expires_at, resend_available_at, now,
             verification_id, now, now, replaces),
        )  # fmt: skip

    async def transition(
        self, verification_id: str, from_statuses: Sequence[Status], to: Status, now: float
    ) -> Verification | None:
        allowed = [Status(s).value for s in from_statuses]
        if not allowed:
            return None
        return await self._verification(
            "UPDATE verifications SET status = ?, updated_at = ? "  # noqa: S608 - constant
            f"WHERE id = ? AND status IN ({marks(len(allowed))}) RETURNING {V_COLUMNS}",
            (Status(to).value, now, verification_id, *allowed),
        )

    # -- rate windows: the checks here, the work in each backend's own methods ------

    async def hit(
        self, rules: Sequence[RateRule], now: float, cost: int = 1, record: bool = True
    ) -> RateDecision:
        rules = hit_rules(rules, cost)
        return await self._hit(rules, now, cost, record) if rules else RateDecision(True)

    async def release(self, keys: Sequence[str], at: float, cost: int = 1) -> None:
        keys = list(dict.fromkeys(keys))
        if keys and cost > 0:
            await self._release(keys, at, cost)

    async def admit(
        self, rules: Sequence[RateRule], buckets: Sequence[Bucket], now: float, *,
        pressure: float | None = None, force: bool = False, start: Started | None = None,
    ) -> RateDecision:  # fmt: skip
        return await self._admit(tuple(rules), tuple(buckets), now, pressure, force, start)

    async def credit(self, buckets: Sequence[Bucket], refund: int, now: float) -> None:
        if buckets:
            await self._credit(tuple(buckets), refund, now)

    async def count(self, key: str, window: int, now: float) -> int:
        return (await self.counts([(key, window)], now))[0]

    async def counts(self, queries: Sequence[tuple[str, int]], now: float) -> list[int]:
        if not queries:
            return []
        return await self._counts([(key, now - window) for key, window in queries])

    @abc.abstractmethod
    async def _hit(
        self, rules: Sequence[RateRule], now: float, cost: int, record: bool
    ) -> RateDecision:
        """``hit`` with at least one rule and ``cost >= 0``."""

    async def _release(self, keys: Sequence[str], at: float, cost: int) -> None:
        async def run(cur: Cursor) -> None:
            await self._lock_keys(cur, keys)
            await self._release_in(cur, keys, at, cost)

        await self._run(run, WRITE)

    async def _credit(self, buckets: Sequence[Bucket], refund: int, now: float) -> None:
        async def run(cur: Cursor) -> None:
            await self._lock_keys(cur, [b.key for b in buckets])
            await self._credit_in(cur, buckets, refund, now)

        await self._run(run, WRITE)

    async def _lock_keys(self, cur: Cursor, keys: Sequence[str]) -> None:
        """Inside a transaction: lock the rate and bucket ``keys`` as ``hit`` and
        ``admit`` do, all at once (SQLite's transactions hold the whole database)."""

    @abc.abstractmethod
    async def _hit_in(self, cur: Cursor, rules: Sequence[RateRule], now: float) -> RateDecision:
        """A recorded ``hit`` of cost 1 of ``rules`` (at least one), inside a transaction."""

    @abc.abstractmethod
    async def _release_in(self, cur: Cursor, keys: Sequence[str], at: float, cost: int) -> None:
        """``release`` of distinct ``keys``, ``cost > 0``, inside a transaction."""

    @abc.abstractmethod
    async def _credit_in(
        self, cur: Cursor, buckets: Sequence[Bucket], refund: int, now: float
    ) -> None:
        """``credit`` of at least one bucket, inside a transaction (keys locked)."""

    @abc.abstractmethod
    async def _record_in(self, cur: Cursor, keys: Sequence[str], now: float) -> None:
        """One entry at ``now`` under each of the distinct ``keys``, inside a transaction."""

    @abc.abstractmethod
    async def _admit(
        self, rules: Sequence[RateRule], buckets: Sequence[Bucket], now: float,
        pressure: float | None, force: bool, start: Started | None,
    ) -> RateDecision:  # fmt: skip
        """``admit``."""

    async def _write_start(self, cur: Cursor, start: Started) -> None:
        """An admitted start's verification and events, in the admission's transaction."""
        await cur.run(CREATE_V, verification_values(start.verification))
        if start.events:
            await cur.many(EVENT_INSERT, [self._event_row(e) for e in start.events])
            await cur.many(
                counts_sql.BUMP, counts_sql.with_family(counters.of_events(start.events))
            )

    @abc.abstractmethod
    async def _counts(self, windows: Sequence[tuple[str, float]]) -> list[int]:
        """The events under each ``(key, start)`` since ``start``, at least one."""

    # -- flags ----------------------------------------------------------------------

    async def set_flag(self, key: str, value: str, until: float) -> None:
        await self._run(lambda cur: cur.run(UPSERT_FLAG, (key, value, until)))

    async def get_flag(self, key: str, now: float) -> str | None:
        sql = "SELECT value FROM flags WHERE key = ? AND until > ?"
        row = await self._run(lambda cur: cur.one(sql, (key, now)))
        return None if row is None else str(row[0])

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        return await self._run(lambda cur: self._flags_in(cur, keys, now)) if keys else {}

    @staticmethod
    async def _flags_in(cur: Cursor, keys: Sequence[str], now: float) -> dict[str, str]:
        if not keys:
            return {}
        sql = f"SELECT key, value FROM flags WHERE key IN ({marks(len(keys))}) AND until > ?"  # noqa: S608 - constant names; values are bound
        return {str(k): str(v) for k, v in await cur.all(sql, [*keys, now])}

    # -- maintenance ----------------------------------------------------------------

    def _purge_jobs(self, now: float, rate_horizon: float) -> list[tuple[str, str, float]]:
        """A backend's own tables to purge: ``(table, condition, bound)``."""
        return []

    async def purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        jobs = (
            ("verifications", "expires_at < ?", now - verification_grace),
            ("rate_log", "ts < ?", now - rate_horizon),
            *self._purge_jobs(now, rate_horizon),
            ("events", "ts < ?", now - event_horizon),
            ("refusal_tallies", "minute < ?", now - event_horizon - 60),
            ("flags", "until <= ?", now),
            ("signed_out", "until <= ?", now),
            ("buckets", "forget_at < ?", now),
            *(("event_counts", c, now - event_horizon - 60) for c in counts_sql.PURGE_CONDITIONS),
        )
        total = 0
        for table, condition, bound in jobs:
            removed = await self._purge_table(table, condition, bound)
            if table != "event_counts":  # sums of events, not rows of data
                total += removed
        return total

    async def _purge_table(self, table: str, condition: str, bound: float) -> int:
        """Delete in batches, one short statement each: other work interleaves, and
        instances purging at the same time just find fewer rows."""
        sql, batch, total = self._delete_batch(table, condition), self._purge_batch(), 0
        while True:
            removed = await self._run(lambda cur: cur.run(sql, (bound, batch)), slow=True)
            total += removed
            if removed < batch:
                return total
