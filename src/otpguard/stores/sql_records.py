"""Events, refusal tallies, event counts, alerts and API keys in the SQL stores (mixed
into ``SQLStore``): the admin data, beside the verifications and rate windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import counters
from ..events import Event
from . import counts_sql
from .records import Alert, ApiKey, EventCount, EventQuery, RefusalTally
from .sql import (
    A_COLUMNS,
    E_FIELDS,
    K_COLUMNS,
    WRITE,
    Cursor,
    SQLDialect,
    alert_from_row,
    api_key_from_row,
    event_conditions,
    marks,
    tally_from_row,
    upsert,
)

_TALLY = (
    "INSERT INTO refusal_tallies (minute, key, count, last_ts, example) VALUES (?, ?, 1, ?, ?) "
    "ON CONFLICT (minute, key) DO UPDATE SET count = refusal_tallies.count + 1, "
    "last_ts = CASE WHEN excluded.last_ts > refusal_tallies.last_ts "
    "THEN excluded.last_ts ELSE refusal_tallies.last_ts END RETURNING count"
)
EVENT_INSERT = f"INSERT INTO events ({', '.join(E_FIELDS)}) VALUES ({marks(len(E_FIELDS))})"  # noqa: S608 - constant names; values are bound
_UPSERT_ALERT = upsert("alerts", A_COLUMNS, "id")


class SQLRecords(SQLDialect):
    # -- events ---------------------------------------------------------------------

    def _event_row(self, e: Event) -> tuple[Any, ...]:
        return (
            e.id, e.type, e.ts, e.verification_id, e.number_masked, e.number_hash, e.country,
            e.channel, e.client_ip, e.reason, e.rule, e.provider_code, self._json_in(e.details),
        )  # fmt: skip

    async def add_events(self, events: Sequence[Event]) -> None:
        if events:
            await self._run(lambda cur: self._store_events(cur, events), WRITE)

    async def _store_events(self, cur: Cursor, events: Sequence[Event]) -> None:
        """``add_events`` inside a transaction (``settle`` runs it in its own)."""
        rows = [self._event_row(e) for e in events]
        bumps = counts_sql.with_family(counters.of_events(events))
        await cur.many(EVENT_INSERT, rows)
        await cur.many(counts_sql.BUMP, bumps)

    async def list_events(self, query: EventQuery) -> list[Event]:
        where, params = event_conditions(query, "?")
        if query.types:
            where.append(f"type IN ({marks(len(query.types))})")
            params.extend(query.types)
        hashes = query.number_hashes  # any of them: a number's hash under every key
        if hashes is not None:
            where.append(f"number_hash IN ({marks(len(hashes))})" if hashes else "1 = 0")
            params.extend(hashes)
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
        sql, where, params = f"SELECT {A_COLUMNS} FROM alerts", [], []  # noqa: S608 - constant names; values are bound
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
        sql = f"SELECT {K_COLUMNS} FROM api_keys ORDER BY created_at, id"  # noqa: S608 - constant names; values are bound
        return [
            api_key_from_row(row, self._json_out)
            for row in await self._run(lambda cur: cur.all(sql))
        ]

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        return await self._changed(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, key_id),
        )
