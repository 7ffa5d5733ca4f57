"""The ``event_counts`` table of the two SQL stores (``counters.py`` says what it counts).

One row per minute and kind. The statements are written once with ``{p}`` for the
placeholder (``?`` in SQLite, ``%s`` in PostgreSQL); SQLite runs them here, on the
connection of a transaction its store has open, PostgreSQL through its store's
helpers. The increments arrive merged and sorted (``counters.increments``), so
concurrent writers lock the rows in one order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..counters import FAMILIES, family_of
from .base import EventCount

#: The table, the same in both dialects but for the integer type (and SQLite's WITHOUT
#: ROWID: the rows live in the key's b-tree, not also in a second one). The family leads
#: the key: a reader asks for a few families over a range of minutes, one range scan
#: each, and the purge deletes each family's old minutes the same way.
CREATE = """CREATE TABLE event_counts (
    family TEXT{collate} NOT NULL,
    minute {int} NOT NULL,
    kind TEXT{collate} NOT NULL,
    count {int} NOT NULL,
    PRIMARY KEY (family, minute, kind)
){options}"""
BUMP = (
    "INSERT INTO event_counts (family, minute, kind, count) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (family, minute, kind) DO UPDATE SET count = event_counts.count + excluded.count"
)
_RANGE = "family = {p} AND minute >= {p} AND minute < {p}"
LIST = "SELECT minute, kind, count FROM event_counts WHERE " + _RANGE  # noqa: S608 - constant
TOP = (
    "SELECT kind, SUM(count) AS n FROM event_counts WHERE " + _RANGE + " "  # noqa: S608
    "GROUP BY kind ORDER BY n DESC, kind LIMIT {p}"
)


#: Per family: ``(condition, bound)`` jobs of the stores' batched purge.
PURGE_CONDITIONS = tuple(f"family = '{f}' AND minute < {{p}}" for f in FAMILIES)
#: SQLite's batch delete picks rows by key (the table has no rowid).
SQLITE_KEY = "(family, minute, kind)"


def sql(statement: str, placeholder: str) -> str:
    return statement.replace("{p}", placeholder)


def range_params(since: float, until: float, family: str) -> list[Any]:
    return [family, since, until]


def with_family(rows: Sequence[tuple[int, str, int]]) -> list[tuple[str, int, str, int]]:
    """``counters.increments`` rows as the table's (family, minute, kind, count)."""
    return [(family_of(kind), minute, kind, n) for minute, kind, n in rows]


def check_families(families: Sequence[str]) -> None:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown event count families: {unknown}")


def rows_to_counts(rows: Sequence[Sequence[Any]]) -> list[EventCount]:
    return [EventCount(int(m), str(k), int(n)) for m, k, n in rows]


# -- SQLite, on a connection inside the caller's transaction ---------------------------


def sqlite_bump(conn: sqlite3.Connection, rows: Sequence[tuple[int, str, int]]) -> None:
    if rows:
        conn.executemany(sql(BUMP, "?"), with_family(rows))


def sqlite_list(
    conn: sqlite3.Connection, since: float, until: float, families: Sequence[str]
) -> list[EventCount]:
    check_families(families)
    out: list[EventCount] = []
    for family in families:
        out += rows_to_counts(
            conn.execute(sql(LIST, "?"), range_params(since, until, family)).fetchall()
        )
    return out


def sqlite_top(
    conn: sqlite3.Connection, family: str, since: float, until: float, limit: int
) -> list[tuple[str, int]]:
    check_families([family])
    params = [*range_params(since, until, family), max(0, limit)]
    return [(str(k), int(n)) for k, n in conn.execute(sql(TOP, "?"), params)]


# -- PostgreSQL: the increments as arrays, in the statement that stores the events --------

_PG_UNNEST = "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[])"
_PG_UPSERT = (
    "ON CONFLICT (family, minute, kind) DO UPDATE SET count = event_counts.count + EXCLUDED.count"
)
PG_BUMP = "INSERT INTO event_counts (family, minute, kind, count) " + _PG_UNNEST + " " + _PG_UPSERT


def pg_arrays(rows: Sequence[tuple[int, str, int]]) -> list[list[Any]]:
    table = with_family(rows)
    return [[r[i] for r in table] for i in range(4)]


def pg_with_bump(statement: str) -> str:
    """``statement`` (an INSERT without RETURNING) and the increments, as one statement:
    atomic in autocommit mode, one round trip."""
    return f"WITH stored AS ({statement}) {PG_BUMP}"


#: A refusal's tally and, from its second refusal in the minute, its kinds' counts.
PG_TALLY = (
    "WITH t AS (INSERT INTO refusal_tallies (minute, key, count, last_ts, example) "  # noqa: S608 - constant
    "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (minute, key) DO UPDATE SET "
    "count = refusal_tallies.count + 1, "
    "last_ts = GREATEST(refusal_tallies.last_ts, EXCLUDED.last_ts) RETURNING count), "
    "c AS (INSERT INTO event_counts (family, minute, kind, count) "
    "SELECT u.f, u.m, u.k, u.n "
    "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[]) AS u(f, m, k, n), "
    "t WHERE t.count > 1 " + _PG_UPSERT + ") "
    "SELECT count FROM t"
)
