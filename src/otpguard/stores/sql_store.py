"""The SQL base: every operation the SQLite and PostgreSQL stores run the same way.

A backend subclasses :class:`SQLStore` and provides the dialect (``sql.SQLDialect``):
``_run`` (a cursor, in a transaction or not), JSON in and out, the batched DELETE, and
advisory locks where its transactions need them. What is really its own stays in its
module: SQLite's WAL, checkpoints and per-minute rate counts; PostgreSQL's pool, outage
probe, migrations and server-side functions. A backend may replace any operation here
with a faster one of its own (PostgreSQL folds some into one statement).

Statements use ``?``; each method says its transaction mode (``WRITE`` when it reads
before it writes). Error translation is the contract's (``Store.__init_subclass__``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import counters
from ..events import Event
from ..models import AttemptOutcome, AttemptTicket, Status, Verification
from . import counts_sql
from .base import Alert, ApiKey, EventCount, EventQuery, RefusalTally, Store
from .sql import (
    A_COLUMNS,
    E_FIELDS,
    K_COLUMNS,
    SELECT_V,
    V_COLUMNS,
    V_PLACEHOLDERS,
    WRITE,
    Cursor,
    Row,
    alert_from_row,
    api_key_from_row,
    event_conditions,
    marks,
    tally_from_row,
    verification_from_row,
    verification_values,
)
from .sql_lists import SQLLists
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
_PENDING = f"{SELECT_V} WHERE to_number = ? AND status = 'pending' AND expires_at > ?"
_TALLY = (
    "INSERT INTO refusal_tallies (minute, key, count, last_ts, example) VALUES (?, ?, 1, ?, ?) "
    "ON CONFLICT (minute, key) DO UPDATE SET count = refusal_tallies.count + 1, "
    "last_ts = CASE WHEN excluded.last_ts > refusal_tallies.last_ts "
    "THEN excluded.last_ts ELSE refusal_tallies.last_ts END RETURNING count"
)


def upsert(table: str, columns: str, key: str) -> str:
    """Insert ``columns`` (comma-separated) into ``table``, or replace the row of ``key``."""
    names = [c.strip() for c in columns.split(",")]
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c != key)
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({marks(len(names))}) "  # noqa: S608 - constant
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


_UPSERT_FLAG = upsert("flags", "key, value, until", "key")
_UPSERT_ALERT = upsert("alerts", A_COLUMNS, "id")


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


class SQLStore(SQLLists, SQLWebhooks, Store):
    """The shared operations; a backend adds the dialect and the rate windows."""

    async def health(self) -> None:
        await self._run(lambda cur: cur.one("SELECT 1"))

    # -- verifications ------------------------------------------------------------

    async def create_verification(self, v: Verification) -> None:
        sql = f"INSERT INTO verifications ({V_COLUMNS}) VALUES ({marks(V_PLACEHOLDERS)})"  # noqa: S608
        await self._run(lambda cur: cur.run(sql, verification_values(v)))

    async def _verification(self, sql: str, params: Sequence[Any]) -> Verification | None:
        row = await self._run(lambda cur: cur.one(sql, params))
        return None if row is None else verification_from_row(row)

    async def get_verification(self, verification_id: str) -> Verification | None:
        return await self._verification(f"{SELECT_V} WHERE id = ?", (verification_id,))

    async def find_pending(self, to: str, now: float) -> Verification | None:
        sql = f"{_PENDING} ORDER BY created_at DESC, id DESC LIMIT 1"
        return await self._verification(sql, (to, now))

    async def list_pending(
        self, to: str, now: float, *, owner: str | None, limit: int
    ) -> list[Verification]:
        sql, params = _PENDING, [to, now]
        if owner is not None:
            sql += " AND (owner = ? OR owner IS NULL)"
            params.append(owner)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self._run(lambda cur: cur.all(sql, [*params, max(0, limit)]))
        return [verification_from_row(row) for row in rows]

    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        async def run(cur: Cursor) -> AttemptTicket | None:
            params = (now, now, now, verification_id, now, max_attempts)
            row = await cur.one(ATTEMPT_UPDATE, params)
            if row is not None:
                return ticket(row, True)
            sql = f"{SELECT_V} WHERE id = ?{self.for_update}"
            return ticket(await cur.one(sql, (verification_id,)), False)

        return await self._run(run, WRITE)

    async def _changed(self, sql: str, params: Sequence[Any]) -> bool:
        return await self._run(lambda cur: cur.run(sql, params)) == 1

    async def approve(self, verification_id: str, now: float, *, code_hash: str) -> bool:
        return await self._changed(
            "UPDATE verifications SET status = 'approved', updated_at = ? "
            "WHERE id = ? AND status = 'pending' AND expires_at > ? AND code_hash = ?",
            (now, verification_id, now, code_hash),
        )

    async def lock_if_exhausted(self, verification_id: str, max_attempts: int, now: float) -> bool:
        return await self._changed(
            "UPDATE verifications SET status = 'max_attempts_reached', updated_at = ? "
            "WHERE id = ? AND status = 'pending' AND attempts >= ?",
            (now, verification_id, max_attempts),
        )

    async def replace_code(
        self,
        verification_id: str,
        key_id: str,
        code_hash: str,
        now: float,
        expires_at: float,
        resend_available_at: float,
    ) -> Verification | None:
        return await self._verification(
            "UPDATE verifications SET key_id = ?, code_hash = ?, expires_at = ?, "  # noqa: S608
            "resend_available_at = ?, updated_at = ?, sends = sends + 1 "
            "WHERE id = ? AND status = 'pending' AND expires_at > ? "
            f"AND resend_available_at <= ? RETURNING {V_COLUMNS}",
            (key_id, code_hash, expires_at, resend_available_at, now,
             verification_id, now, now),
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

    # -- flags ----------------------------------------------------------------------

    async def set_flag(self, key: str, value: str, until: float) -> None:
        await self._run(lambda cur: cur.run(_UPSERT_FLAG, (key, value, until)))

    async def get_flag(self, key: str, now: float) -> str | None:
        sql = "SELECT value FROM flags WHERE key = ? AND until > ?"
        row = await self._run(lambda cur: cur.one(sql, (key, now)))
        return None if row is None else str(row[0])

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        if not keys:
            return {}
        sql = f"SELECT key, value FROM flags WHERE key IN ({marks(len(keys))}) AND until > ?"  # noqa: S608
        rows = await self._run(lambda cur: cur.all(sql, [*keys, now]))
        return {str(k): str(v) for k, v in rows}

    # -- events ---------------------------------------------------------------------

    def _event_row(self, e: Event) -> tuple[Any, ...]:
        return (
            e.id, e.type, e.ts, e.verification_id, e.number_masked, e.number_hash, e.country,
            e.channel, e.client_ip, e.reason, e.rule, e.provider_code, self._json_in(e.details),
        )  # fmt: skip

    async def add_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        rows = [self._event_row(e) for e in events]
        bumps = counts_sql.with_family(counters.of_events(events))
        sql = f"INSERT INTO events ({', '.join(E_FIELDS)}) VALUES ({marks(len(E_FIELDS))})"  # noqa: S608

        async def run(cur: Cursor) -> None:
            await cur.many(sql, rows)
            await cur.many(counts_sql.BUMP, bumps)

        await self._run(run, WRITE)

    async def list_events(self, query: EventQuery) -> list[Event]:
        where, params = event_conditions(query, "?")
        if query.types:
            where.append(f"type IN ({marks(len(query.types))})")
            params.extend(query.types)
        sql = f"SELECT {', '.join(E_FIELDS)} FROM events"  # noqa: S608 - fixed columns
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(0, query.limit))
        # A big page (the alert job, stats) leaves the loop free.
        rows = await self._run(lambda cur: cur.all(sql, params), slow=query.limit > 500)
        out = []
        for row in rows:
            data = dict(zip(E_FIELDS, row, strict=True))
            data["details"] = self._json_out(data["details"])
            out.append(Event(**data))
        return out

    async def tally_refusal(self, minute: int, key: str, example: Event) -> int:
        params = (minute, key, example.ts, self._json_in(example.to_dict()))
        repeat = counts_sql.with_family(counters.increments([(minute, example)]))

        async def run(cur: Cursor) -> int:
            row = await cur.one(_TALLY, params)
            assert row is not None  # an upsert with RETURNING always returns its row
            if int(row[0]) > 1:  # the first is counted when it is stored as an event
                await cur.many(counts_sql.BUMP, repeat)
            return int(row[0])

        return await self._run(run, WRITE)

    async def list_refusal_tallies(self, since: float, until: float) -> list[RefusalTally]:
        sql = (
            "SELECT minute, key, count, last_ts, example FROM refusal_tallies "
            "WHERE minute > ? AND minute < ?"
        )
        rows = await self._run(lambda cur: cur.all(sql, (since - 60, until)), slow=True)
        return [tally_from_row(row, self._json_out) for row in rows]

    async def list_event_counts(
        self, since: float, until: float, families: Sequence[str]
    ) -> list[EventCount]:
        counts_sql.check_families(families)

        async def run(cur: Cursor) -> list[EventCount]:
            out: list[EventCount] = []
            for family in families:
                rows = await cur.all(counts_sql.LIST, (family, since, until))
                out += counts_sql.rows_to_counts(rows)
            return out

        return await self._run(run, slow=True)

    async def top_event_counts(
        self, family: str, since: float, until: float, limit: int
    ) -> list[tuple[str, int]]:
        counts_sql.check_families([family])
        params = (family, since, until, max(0, limit))
        rows = await self._run(lambda cur: cur.all(counts_sql.TOP, params), slow=True)
        return [(str(k), int(n)) for k, n in rows]

    # -- alerts ---------------------------------------------------------------------

    async def put_alert(self, alert: Alert) -> None:
        row = (
            alert.id, alert.rule, alert.subject, alert.status, alert.opened_at, alert.updated_at,
            alert.resolved_at, alert.message, self._json_in(alert.details),
        )  # fmt: skip
        await self._run(lambda cur: cur.run(_UPSERT_ALERT, row))

    async def list_alerts(
        self, since: float | None = None, status: str | None = None
    ) -> list[Alert]:
        sql, where, params = f"SELECT {A_COLUMNS} FROM alerts", [], []  # noqa: S608
        for condition, value in (("updated_at >= ?", since), ("status = ?", status)):
            if value is not None:
                where.append(condition)
                params.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC, id DESC"
        rows = await self._run(lambda cur: cur.all(sql, params))
        return [alert_from_row(row, self._json_out) for row in rows]

    # -- API keys -------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey) -> None:
        row = (key.id, key.name, key.key_hash, self._json_in(list(key.scopes)), key.created_at,
               key.revoked_at)  # fmt: skip
        sql = f"INSERT INTO api_keys ({K_COLUMNS}) VALUES ({marks(6)})"  # noqa: S608 - constant
        await self._run(lambda cur: cur.run(sql, row))

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        sql = f"SELECT {K_COLUMNS} FROM api_keys WHERE id = ?"  # noqa: S608 - constant
        row = await self._run(lambda cur: cur.one(sql, (key_id,)))
        return None if row is None else api_key_from_row(row, self._json_out)

    async def list_api_keys(self) -> list[ApiKey]:
        sql = f"SELECT {K_COLUMNS} FROM api_keys ORDER BY created_at, id"  # noqa: S608
        return [
            api_key_from_row(row, self._json_out)
            for row in await self._run(lambda cur: cur.all(sql))
        ]

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        return await self._changed(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, key_id),
        )

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
            ("buckets", "forget_at < ?", now),
            *(("event_counts", c, now - event_horizon - 60) for c in counts_sql.PURGE_CONDITIONS),
        )
        total = 0
        for table, condition, bound in jobs:
            removed = await self._purge_table(table, condition, bound)
            # rate_buckets index rate_log, event_counts sum events: not rows of data
            if table not in ("rate_buckets", "event_counts"):
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
