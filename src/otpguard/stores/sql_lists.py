"""The block and allow lists (``otpguard.numberlists``) in the SQL stores.

An entry is a row of ``flags`` (key ``numlist:<pattern>``), so ``get_flags`` reads
it on the send path and ``purge`` deletes it once expired, with nothing more. The
entries are the key range ``[numlist:, numlist;)`` of the primary key. Adding one
checks the cap and writes in one write transaction: SQLite's ``BEGIN IMMEDIATE`` (the
write lock before the count), PostgreSQL's transaction-scoped advisory lock
``LISTS_LOCK`` (every writer of the lists takes it before counting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..numberlists import KEY_END, KEY_PREFIX, ListEntry, NumberListFull, decode, encode, flag_key
from .sql import WRITE, Cursor, SQLDialect, upsert

LISTS_LOCK = 0x6F746E6C6973  # "otnlis": the advisory lock key of the lists' writers
_RANGE = "key >= ? AND key < ? AND until > ?"
UPSERT_FLAG = upsert("flags", "key, value, until", "key")


def _entry(key: str, value: str, until: float) -> ListEntry | None:
    return decode(key[len(KEY_PREFIX) :], value, until)


def _newest_first(rows: Sequence[Sequence[Any]]) -> list[ListEntry]:
    entries = [x for k, v, u in rows if (x := _entry(str(k), str(v), float(u))) is not None]
    entries.sort(key=lambda x: x.pattern)
    entries.sort(key=lambda x: x.created_at, reverse=True)  # stable: pattern order for ties
    return entries


class SQLLists(SQLDialect):
    """Mixed into ``SQLStore``."""

    async def put_list_entry(self, entry: ListEntry, now: float, cap: int) -> ListEntry | None:
        key = flag_key(entry.pattern)

        async def run(cur: Cursor) -> ListEntry | None:
            await self._lock(cur, [LISTS_LOCK])
            row = await cur.one("SELECT value, until FROM flags WHERE key = ? AND until > ?",
                                (key, now))  # fmt: skip
            if row is None:
                counted = await cur.one(f"SELECT COUNT(*) FROM flags WHERE {_RANGE}",  # noqa: S608 - constant names; values are bound
                                        (KEY_PREFIX, KEY_END, now))  # fmt: skip
                if counted is not None and counted[0] >= cap:
                    raise NumberListFull(cap)
            await cur.run(UPSERT_FLAG, (key, encode(entry), entry.until))
            return None if row is None else _entry(key, row[0], row[1])

        return await self._run(run, WRITE)

    async def delete_list_entry(self, pattern: str, now: float) -> ListEntry | None:
        key = flag_key(pattern)
        sql = "DELETE FROM flags WHERE key = ? RETURNING value, until"
        row = await self._run(lambda cur: cur.one(sql, (key,)))
        if row is None or float(row[1]) <= now:
            return None
        return _entry(key, row[0], row[1])

    async def list_entries(self, now: float) -> list[ListEntry]:
        sql = f"SELECT key, value, until FROM flags WHERE {_RANGE}"  # noqa: S608 - constant
        return _newest_first(await self._run(lambda cur: cur.all(sql, (KEY_PREFIX, KEY_END, now))))

    async def count_list_entries(self, now: float) -> dict[str, int]:
        # The entries' kinds, counted in Python: no JSON function differs per dialect.
        sql = f"SELECT key, value, until FROM flags WHERE {_RANGE}"  # noqa: S608 - constant
        counts = {"block": 0, "allow": 0}
        for k, v, u in await self._run(lambda cur: cur.all(sql, (KEY_PREFIX, KEY_END, now))):
            entry = _entry(str(k), str(v), float(u))
            if entry is not None:
                counts[entry.kind] = counts.get(entry.kind, 0) + 1
        return counts
