"""The block and allow lists (``otpguard.numberlists``) in the two SQL stores.

An entry is a row of ``flags`` (key ``numlist:<pattern>``), so ``get_flags`` reads
it on the send path and ``purge`` deletes it once expired, with nothing more. The
entries are the key range ``[numlist:, numlist;)`` of the primary key. Adding one
checks the cap and writes in one transaction: SQLite's ``BEGIN IMMEDIATE`` (the
write lock before the count), PostgreSQL's transaction-scoped advisory lock
``LISTS_LOCK`` (every writer of the lists takes it before counting).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..numberlists import KEY_END, KEY_PREFIX, ListEntry, NumberListFull, decode, encode, flag_key
from .sqlite_txn import transaction

T = TypeVar("T")

LISTS_LOCK = 0x6F746E6C6973  # "otnlis": the advisory lock key of the lists' writers


def _entry(key: str, value: str, until: float) -> ListEntry | None:
    return decode(key[len(KEY_PREFIX) :], value, until)


def _newest_first(rows: Sequence[Sequence[Any]]) -> list[ListEntry]:
    entries = [x for k, v, u in rows if (x := _entry(str(k), str(v), float(u))) is not None]
    entries.sort(key=lambda x: x.pattern)
    entries.sort(key=lambda x: x.created_at, reverse=True)  # stable: pattern order for ties
    return entries


class SQLiteLists:
    """Mixed into SQLiteStore, whose ``_run`` runs ``fn(conn)`` inline, retrying when busy."""

    async def _run(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # SQLiteStore's

    async def put_list_entry(self, entry: ListEntry, now: float, cap: int) -> ListEntry | None:
        key = flag_key(entry.pattern)

        def run(conn: sqlite3.Connection) -> ListEntry | None:
            with transaction(conn):
                row = conn.execute(
                    "SELECT value, until FROM flags WHERE key = ? AND until > ?", (key, now)
                ).fetchone()
                previous = None if row is None else _entry(key, row[0], row[1])
                if row is None:
                    (n,) = conn.execute(
                        "SELECT COUNT(*) FROM flags WHERE key >= ? AND key < ? AND until > ?",
                        (KEY_PREFIX, KEY_END, now),
                    ).fetchone()
                    if n >= cap:
                        raise NumberListFull(cap)
                conn.execute(
                    "INSERT OR REPLACE INTO flags (key, value, until) VALUES (?, ?, ?)",
                    (key, encode(entry), entry.until),
                )
            return previous

        return await self._run("put_list_entry", run)

    async def delete_list_entry(self, pattern: str, now: float) -> ListEntry | None:
        key = flag_key(pattern)

        def run(conn: sqlite3.Connection) -> ListEntry | None:
            row = conn.execute(
                "DELETE FROM flags WHERE key = ? RETURNING value, until", (key,)
            ).fetchone()
            if row is None or float(row[1]) <= now:
                return None
            return _entry(key, row[0], row[1])

        return await self._run("delete_list_entry", run)

    async def list_entries(self, now: float) -> list[ListEntry]:
        def run(conn: sqlite3.Connection) -> list[ListEntry]:
            rows = conn.execute(
                "SELECT key, value, until FROM flags WHERE key >= ? AND key < ? AND until > ?",
                (KEY_PREFIX, KEY_END, now),
            ).fetchall()
            return _newest_first(rows)

        return await self._run("list_entries", run)

    async def count_list_entries(self, now: float) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT json_extract(value, '$.kind'), COUNT(*) FROM flags "
                "WHERE key >= ? AND key < ? AND until > ? GROUP BY 1",
                (KEY_PREFIX, KEY_END, now),
            ).fetchall()
            return {"block": 0, "allow": 0, **{str(k): int(n) for k, n in rows}}

        return await self._run("count_list_entries", run)


class PostgresLists:
    """Mixed into PostgresStore: ``_conn`` is a pooled autocommit connection, ``_one`` and
    ``_all`` one statement each."""

    def _conn(self, op: str) -> contextlib.AbstractAsyncContextManager[Any]:
        raise NotImplementedError  # PostgresStore's

    async def _one(self, op: str, query: str, params: Any = None) -> tuple[Any, ...] | None:
        raise NotImplementedError  # PostgresStore's

    async def _all(self, op: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # PostgresStore's

    async def put_list_entry(self, entry: ListEntry, now: float, cap: int) -> ListEntry | None:
        key = flag_key(entry.pattern)
        conn: Any
        async with self._conn("put_list_entry") as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LISTS_LOCK,))
            cur = await conn.execute(
                "SELECT value, until FROM flags WHERE key = %s AND until > %s", (key, now)
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(
                    "SELECT COUNT(*) FROM flags WHERE key >= %s AND key < %s AND until > %s",
                    (KEY_PREFIX, KEY_END, now),
                )
                counted = await cur.fetchone()
                if counted is not None and counted[0] >= cap:
                    raise NumberListFull(cap)
            await conn.execute(
                "INSERT INTO flags (key, value, until) VALUES (%s, %s, %s) ON CONFLICT (key) "
                "DO UPDATE SET value = EXCLUDED.value, until = EXCLUDED.until",
                (key, encode(entry), entry.until),
            )
        return None if row is None else _entry(key, row[0], row[1])

    async def delete_list_entry(self, pattern: str, now: float) -> ListEntry | None:
        key = flag_key(pattern)
        row = await self._one(
            "delete_list_entry", "DELETE FROM flags WHERE key = %s RETURNING value, until", (key,)
        )
        if row is None or float(row[1]) <= now:
            return None
        return _entry(key, row[0], row[1])

    async def list_entries(self, now: float) -> list[ListEntry]:
        rows = await self._all(
            "list_entries",
            "SELECT key, value, until FROM flags WHERE key >= %s AND key < %s AND until > %s",
            (KEY_PREFIX, KEY_END, now),
        )
        return _newest_first(rows)

    async def count_list_entries(self, now: float) -> dict[str, int]:
        rows = await self._all(
            "count_list_entries",
            "SELECT value::jsonb ->> 'kind', COUNT(*) FROM flags "
            "WHERE key >= %s AND key < %s AND until > %s GROUP BY 1",
            (KEY_PREFIX, KEY_END, now),
        )
        return {"block": 0, "allow": 0, **{str(k): int(n) for k, n in rows}}
