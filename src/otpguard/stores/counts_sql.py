"""The ``event_counts`` table of the SQL stores (``counters.py`` says what it counts;
``sql_schema.COUNTS`` creates it).

One row per minute and kind. The increments arrive merged and sorted
(``counters.increments``), so concurrent writers lock the rows in one order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..counters import FAMILIES, family_of
from .base import EventCount

_UPSERT = (
    "ON CONFLICT (family, minute, kind) DO UPDATE SET count = event_counts.count + excluded.count"
)
BUMP = "INSERT INTO event_counts (family, minute, kind, count) VALUES (?, ?, ?, ?) " + _UPSERT  # noqa: S608 - constant names; values are bound
_RANGE = "family = ? AND minute >= ? AND minute < ?"
LIST = "SELECT minute, kind, count FROM event_counts WHERE " + _RANGE  # noqa: S608 - constant
TOP = (
    "SELECT kind, SUM(count) AS n FROM event_counts WHERE " + _RANGE + " "  # noqa: S608 - constant names; values are bound
    "GROUP BY kind ORDER BY n DESC, kind LIMIT ?"
)

#: Per family: the condition of the stores' batched purge (bound: the oldest minute kept).
PURGE_CONDITIONS = tuple(f"family = '{f}' AND minute < ?" for f in FAMILIES)


def with_family(rows: Sequence[tuple[int, str, int]]) -> list[tuple[str, int, str, int]]:
    """``counters.increments`` rows as the table's (family, minute, kind, count)."""
    return [(family_of(kind), minute, kind, n) for minute, kind, n in rows]


def check_families(families: Sequence[str]) -> None:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown event count families: {unknown}")


def rows_to_counts(rows: Sequence[Sequence[Any]]) -> list[EventCount]:
    return [EventCount(int(m), str(k), int(n)) for m, k, n in rows]


# -- PostgreSQL: the increments as arrays, in the statement that stores the events --------

PG_BUMP = (
    "INSERT INTO event_counts (family, minute, kind, count) "  # noqa: S608 - constant
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[]) " + _UPSERT
)


def pg_arrays(rows: Sequence[tuple[int, str, int]]) -> list[list[Any]]:
    table = with_family(rows)
    return [[r[i] for r in table] for i in range(4)]


#: A refusal's tally and, from its second refusal in the minute, its kinds' counts.
PG_TALLY = (
    "WITH t AS (INSERT INTO refusal_tallies (minute, key, count, last_ts, example) "  # noqa: S608 - constant
    "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (minute, key) DO UPDATE SET "
    "count = refusal_tallies.count + 1, "
    "last_ts = GREATEST(refusal_tallies.last_ts, EXCLUDED.last_ts) RETURNING count), "
    "c AS (INSERT INTO event_counts (family, minute, kind, count) "
    "SELECT u.f, u.m, u.k, u.n "
    "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[]) AS u(f, m, k, n), "
    "t WHERE t.count > 1 " + _UPSERT + ") "
    "SELECT count FROM t"
)
