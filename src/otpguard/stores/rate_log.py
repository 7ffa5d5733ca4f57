"""The rate log's arithmetic, shared by the SQL stores: a sliding window counted
exactly in two index probes, whatever the traffic under its key.

``rate_log`` holds one row per entry: ``(key, ts, cum)``. ``cum`` is the running count
of the key's entries: ordered by ``(ts, cum)``, a key's rows carry consecutive values
(rows of one ``ts`` in any order among themselves). The entries of a window
``(start, ...]`` are then the newest row's ``cum`` minus the ``cum`` of the first row
after ``start``, plus one (``COUNT``): two probes of the index on ``(key, ts, cum)``.

Every writer keeps the sequence consecutive, holding the key's lock (SQLite's write
transaction; PostgreSQL's ``pg_advisory_xact_lock(hashtext(key))``, which hit, admit,
release, credit and settle take):

* a new entry at ``now`` follows the key's last row at or before ``now`` (``BASE``),
  and the rows after ``now`` (another instance's clock ahead of ours, a few at most)
  move up by the entries added;
* a release deletes the entries with the highest ``cum`` at ``at`` and moves the rows
  after ``at`` down by the number deleted (the ones recorded since the reservation);
* the purge deletes a key's oldest rows: a count is a difference inside the window,
  so it needs nothing.

The statements are written for both dialects: ``{key}``, ``{start}``, ``{now}`` are
SQL expressions (a placeholder, a PL/pgSQL variable or a column).
"""

from __future__ import annotations

from collections.abc import Sequence

#: The entries of ``{key}`` with ``ts > {start}``, in one expression (one snapshot).
COUNT = (
    "coalesce((SELECT l.cum FROM rate_log AS l WHERE l.key = {key} "
    "ORDER BY l.ts DESC, l.cum DESC LIMIT 1) - "
    "(SELECT f.cum FROM rate_log AS f WHERE f.key = {key} AND f.ts > {start} "
    "ORDER BY f.ts, f.cum LIMIT 1) + 1, 0)"
)

#: The ``cum`` a new entry of ``{key}`` at ``{now}`` follows: the key's last row at or
#: before ``{now}``; when every row is later, one before the first; 0 for no row.
BASE = (
    "coalesce((SELECT b.cum FROM rate_log AS b WHERE b.key = {key} AND b.ts <= {now} "
    "ORDER BY b.ts DESC, b.cum DESC LIMIT 1), "
    "(SELECT a.cum - 1 FROM rate_log AS a WHERE a.key = {key} ORDER BY a.ts, a.cum LIMIT 1), "
    "0)"
)

#: The ts of the ``{offset} + 1``-th entry of ``{key}`` after ``{start}``, and of the
#: ``{offset} + 1``-th from the newest: a refusal's ``oldest`` (the ``leave``-th of the
#: window's ``n``) is read from whichever end is nearer (``nth_from_start``), so it
#: reads at most the rule's limit of entries (``n - leave`` is ``limit - cost``).
NTH_TS = (
    "SELECT ts FROM rate_log WHERE key = {key} AND ts > {start} "
    "ORDER BY ts, cum LIMIT 1 OFFSET {offset}"
)
NTH_TS_FROM_END = (
    "SELECT ts FROM rate_log WHERE key = {key} AND ts > {start} "
    "ORDER BY ts DESC, cum DESC LIMIT 1 OFFSET {offset}"
)


def nth_from_start(leave: int, n: int) -> bool:
    """Whether the ``leave``-th of ``n`` entries is nearer the first (``NTH_TS`` at
    offset ``leave - 1``) than the newest (``NTH_TS_FROM_END`` at ``n - leave``)."""
    return leave - 1 <= n - leave


def count(key: str, start: str) -> str:
    """``COUNT`` for the SQL expressions ``key`` and ``start`` (with ``?`` for both, the
    parameters are key, key, start)."""
    return COUNT.format(key=key, start=start)


def base(key: str, now: str) -> str:
    """``BASE`` for the SQL expressions ``key`` and ``now`` (with ``?1`` and ``?2``)."""
    return BASE.format(key=key, now=now)


def counts_params(windows: Sequence[tuple[str, float]]) -> list[object]:
    """The parameters of ``count("?", "?")`` once per ``(key, start)`` window."""
    return [p for key, start in windows for p in (key, key, start)]


# -- the writers, SQLite's and PostgreSQL's ---------------------------------------

#: SQLite: one entry of ``?1`` at ``?2``, after the key's last row at or before ``?2``
#: (run once per entry: the next one follows this one)...
SQLITE_RECORD = f"INSERT INTO rate_log (key, ts, cum) VALUES (?1, ?2, {base('?1', '?2')} + 1)"  # noqa: S608 - constant; values are bound
#: ...then the key's later rows move up by the entries added (params: added, key, now).
SQLITE_SHIFT = "UPDATE rate_log SET cum = cum + ? WHERE key = ? AND ts > ?"
#: SQLite's release: up to ``cost`` entries of a key at ``at``, the highest ``cum``
#: first (params: key, at, cost)...
SQLITE_RELEASE = (
    "DELETE FROM rate_log WHERE rowid IN "
    "(SELECT rowid FROM rate_log WHERE key = ? AND ts = ? ORDER BY cum DESC LIMIT ?)"
)
#: ...then the key's later rows move down by the number deleted (removed, key, at).
SQLITE_UNSHIFT = "UPDATE rate_log SET cum = cum - ? WHERE key = ? AND ts > ?"


def pg_record(keys: str, now: str, cost: str) -> str:
    """PostgreSQL: ``cost`` entries at ``now`` under each distinct key of the array
    ``keys``, in one statement (whose reads all see the rows as they were before it).
    Each key's base is read once (``d``, materialized): read per new row, it would step
    over the rows this statement inserted before it."""
    return (
        f"WITH shift AS (UPDATE rate_log SET cum = cum + {cost} "  # noqa: S608 - SQL expressions of the caller's
        f"WHERE key = ANY({keys}) AND ts > {now}), "
        f"d AS MATERIALIZED (SELECT u.k, {base('u.k', now)} AS base "
        f"FROM (SELECT DISTINCT k FROM unnest({keys}) AS k) AS u) "
        f"INSERT INTO rate_log (key, ts, cum) SELECT d.k, {now}, d.base + g "
        f"FROM d, generate_series(1, {cost}) AS g"
    )


def pg_release(keys: str, at: str, cost: str) -> str:
    """PostgreSQL: up to ``cost`` entries at ``at`` under each key of the array
    ``keys``, the highest ``cum`` first, and the later rows moved down, in one statement."""
    return (
        "WITH gone AS (DELETE FROM rate_log WHERE ctid IN (SELECT ctid FROM ("  # noqa: S608 - SQL expressions of the caller's
        "SELECT ctid, row_number() OVER (PARTITION BY key ORDER BY cum DESC) AS nth "
        f"FROM rate_log WHERE key = ANY({keys}) AND ts = {at}) AS s WHERE nth <= {cost}) "
        "RETURNING key) "
        "UPDATE rate_log SET cum = rate_log.cum - g.removed "
        "FROM (SELECT key AS k, count(*) AS removed FROM gone GROUP BY key) AS g "
        f"WHERE rate_log.key = g.k AND rate_log.ts > {at}"
    )


#: The migration of a store's existing rows (PostgreSQL's ``ctid`` or SQLite's
#: ``rowid`` as ``{row}``, its integer type as ``{int}``): number each key's entries in
#: ts order, and index ``(key, ts, cum)`` instead of ``(key, ts)``.
MIGRATION = (
    "ALTER TABLE rate_log ADD COLUMN cum {int}",
    "UPDATE rate_log SET cum = numbered.n FROM ("
    "SELECT {row} AS id, row_number() OVER (PARTITION BY key ORDER BY ts, {row}) AS n "
    "FROM rate_log) AS numbered WHERE rate_log.{row} = numbered.id",
    "DROP INDEX rate_log_key_ts",
    "CREATE INDEX rate_log_key_ts_cum ON rate_log (key, ts, cum)",
)


def migration(row: str) -> tuple[str, ...]:
    """``MIGRATION`` with the dialect's row identifier (``{int}`` is the schema's)."""
    return tuple(s.replace("{row}", row) for s in MIGRATION)
