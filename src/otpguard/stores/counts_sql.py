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

from ..counters import FAMILIES, family_bounds
from .base import EventCount

#: The table, the same in both dialects but for the integer type.
CREATE = """CREATE TABLE event_counts (
    minute {int} NOT NULL,
    kind TEXT{collate} NOT NULL,
    count {int} NOT NULL,
    PRIMARY KEY (minute, kind)
)"""
BUMP = (
    "INSERT INTO event_counts (minute, kind, count) VALUES ({p}, {p}, {p}) "
    "ON CONFLICT (minute, kind) DO UPDATE SET count = event_counts.count + excluded.count"
)
_RANGE = "minute >= {p} AND minute < {p} AND kind >= {p} AND kind < {p}"
LIST = "SELECT minute, kind, count FROM event_counts WHERE " + _RANGE  # noqa: S608 - constant
TOP = (
    "SELECT kind, SUM(count) AS n FROM event_counts WHERE " + _RANGE + " "  # noqa: S608
    "GROUP BY kind ORDER BY n DESC, kind LIMIT {p}"
)


def sql(statement: str, placeholder: str) -> str:
    return statement.replace("{p}", placeholder)


def range_params(since: float, until: float, family: str) -> list[Any]:
    lo, hi = family_bounds(family)
    return [since, until, lo, hi]


def check_families(families: Sequence[str]) -> None:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown event count families: {unknown}")


def rows_to_counts(rows: Sequence[Sequence[Any]]) -> list[EventCount]:
    return [EventCount(int(m), str(k), int(n)) for m, k, n in rows]


# -- SQLite, on a connection inside the caller's transaction ---------------------------


def sqlite_bump(conn: sqlite3.Connection, rows: Sequence[tuple[int, str, int]]) -> None:
    if rows:
        conn.executemany(sql(BUMP, "?"), rows)


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

_PG_UNNEST = "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[])"
PG_BUMP = (
    "INSERT INTO event_counts (minute, kind, count) " + _PG_UNNEST + " "
    "ON CONFLICT (minute, kind) DO UPDATE SET count = event_counts.count + EXCLUDED.count"
)


def pg_arrays(rows: Sequence[tuple[int, str, int]]) -> list[list[Any]]:
    return [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]]


def pg_with_bump(statement: str) -> str:
    """``statement`` (an INSERT without RETURNING) and the increments, as one statement:
    atomic in autocommit mode, one round trip."""
    return f"WITH stored AS ({statement}) {PG_BUMP}"


#: A refusal's tally and, from its second refusal in the minute, its kinds' counts.
PG_TALLY = (
    "WITH t AS (INSERT INTO refusal_tallies (minute, key, count, last_ts, example) "
    "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (minute, key) DO UPDATE SET "
    "count = refusal_tallies.count + 1, "
    "last_ts = GREATEST(refusal_tallies.last_ts, EXCLUDED.last_ts) RETURNING count), "
    "c AS (INSERT INTO event_counts (minute, kind, count) "
    "SELECT u.m, u.k, u.n FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS u(m, k, n), "
    "t WHERE t.count > 1 "
    "ON CONFLICT (minute, kind) DO UPDATE SET count = event_counts.count + EXCLUDED.count) "
    "SELECT count FROM t"
)
