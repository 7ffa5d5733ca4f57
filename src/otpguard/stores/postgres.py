"""The PostgreSQL store: several otpguard instances sharing one database.

``PostgresStore("postgresql://user:password@host:5432/db")``; ``postgres://`` works
too. Three query parameters are otpguard's own and are removed before the URL
reaches libpq: ``pool_min_size`` (default 2), ``pool_max_size`` (default 10) and
``pool_timeout`` (seconds to wait for a connection, default 5). Every other
parameter (``sslmode``, ``options``, ...) is libpq's.

Each process holds one :class:`psycopg_pool.AsyncConnectionPool` of autocommit
connections. Every operation is one statement or one transaction; the shared ones
are ``SQLStore``'s. What is PostgreSQL's own: the pool, the outage probe, the
migrations (``postgres_sql.py``, in one transaction holding an advisory lock, so
instances starting together do not race; ``schema_migrations`` records the versions
applied) and the server-side functions of the rate windows; and a few operations
folded into one statement (one round trip): ``record_attempt``, a single event,
a refusal's tally.

When PostgreSQL goes away every operation raises StorageError (fail closed). Once
an operation has found the server unreachable, the store knows it is down: every
operation fails at once (no wait of ``pool_timeout`` per request) while a background
probe tries a fresh connection every ``PROBE_INTERVAL`` seconds; when one answers,
the pool drops its broken connections and the store serves again, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import psycopg_pool
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from .. import admission, counters
from ..errors import StorageError
from ..events import Event
from ..models import AttemptTicket, Bucket, RateDecision, RateRule
from . import counts_sql, rate_log
from . import postgres_admit as pa
from . import postgres_sql as q
from .base import Started, allowed_decision
from .decisions import FLAGS_FOUND
from .postgres_arrays import configure as _configure
from .postgres_check import JudgedChecks
from .postgres_sql import POOL_DEFAULTS as POOL_DEFAULTS
from .postgres_sql import split_url as _split_url
from .sql import (
    E_FIELDS,
    Body,
    Cursor,
    Row,
    Unavailable,
    marks,
)
from .sql_store import ticket

T = TypeVar("T")
Conn = psycopg.AsyncConnection[TupleRow]

PURGE_BATCH = 5_000  # rows per DELETE: a huge purge never holds locks for long
MIGRATION_LOCK = 0x6F7470677561  # "otpgua": the advisory lock key of the migrations
PROBE_INTERVAL = 0.25  # seconds between reconnection probes while the server is down
PROBE_CONNECT_TIMEOUT = 3  # libpq's connect_timeout (whole seconds, at least 2) per probe
#: SQLSTATEs meaning "the server is not there" (besides errors without one, and PoolTimeout)
_UNREACHABLE_STATES = ("57P01", "57P02", "57P03")  # admin/crash shutdown, cannot connect now
MIGRATIONS = q.MIGRATIONS
_EVENT = f"INSERT INTO events ({', '.join(E_FIELDS)}) VALUES ({marks(len(E_FIELDS))})"  # noqa: S608 - constant names; values are bound


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """A shared statement with psycopg's placeholders (the statements hold no ``%``)."""
    return sql.replace("?", "%s")


class _Cursor:
    """``sql.Cursor`` over a pooled connection."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def one(self, sql: str, params: Any = ()) -> Row | None:
        cur = await self.conn.execute(_pg(sql), params)
        return await cur.fetchone() if cur.description else None

    async def all(self, sql: str, params: Any = ()) -> list[Row]:
        cur = await self.conn.execute(_pg(sql), params)
        return await cur.fetchall()

    async def run(self, sql: str, params: Any = ()) -> int:
        cur = await self.conn.execute(_pg(sql), params)
        return cur.rowcount

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            async with self.conn.cursor() as cur:
                await cur.executemany(_pg(sql), rows)


def _unreachable(exc: psycopg.Error) -> bool:
    """Whether ``exc`` says the server is not there (not that a statement failed)."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, psycopg_pool.PoolClosed):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _UNREACHABLE_STATES


class PostgresStore(JudgedChecks):
    backend = "postgres"
    judges_checks = True  # otpguard_check (postgres_check.py)
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conninfo, self._options = _split_url(url)
        self._pool: psycopg_pool.AsyncConnectionPool[Conn] | None = None
        self._check_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None  # set while the server is down

    def __repr__(self) -> str:  # never the password
        return f"PostgresStore({urlsplit(self.url).hostname!r})"

    def backend_error(self, exc: Exception) -> str | None:
        """psycopg and pool errors (no SQL, no values: the SQLSTATE or the class); a
        broken connection has the idle ones tested, an unreachable server marks the
        store down."""
        if isinstance(exc, psycopg.Error):
            if isinstance(exc, psycopg.OperationalError) and not isinstance(
                exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed
            ):
                self._check_idle_connections()
            if _unreachable(exc):
                self._mark_down()
            return exc.sqlstate or type(exc).__name__
        if isinstance(exc, OSError):
            return type(exc).__name__
        if isinstance(exc, Unavailable):
            return str(exc)
        return None

    # -- the dialect --------------------------------------------------------------

    def _json_in(self, value: Any) -> Jsonb:
        return Jsonb(value)

    def _json_out(self, stored: Any) -> Any:
        return stored  # psycopg decodes JSONB

    def _delete_batch(self, table: str, condition: str) -> str:
        return (
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608 - constant names
            f"SELECT ctid FROM {table} WHERE {condition} LIMIT ?))"
        )

    def _purge_batch(self) -> int:
        return PURGE_BATCH

    async def _lock(self, cur: Cursor, keys: Sequence[int]) -> None:
        for key in keys:
            await cur.run("SELECT pg_advisory_xact_lock(?)", (key,))

    async def _run(self, body: Body[T], mode: str | None = None, *, slow: bool = False) -> T:
        pool = self._pool
        if pool is None:
            raise Unavailable("store is not open")
        if self._probe_task is not None:
            raise Unavailable("server unreachable")
        async with pool.connection() as conn:
            if mode is None:
                return await body(_Cursor(conn))
            async with conn.transaction():
                return await body(_Cursor(conn))

    # -- outages ------------------------------------------------------------------

    def _check_idle_connections(self) -> None:
        """After a connection broke, test the idle ones in the background: a server
        restart then costs one failed operation, not one per pooled connection."""
        pool = self._pool
        if pool is None or (self._check_task is not None and not self._check_task.done()):
            return

        async def check() -> None:
            with contextlib.suppress(psycopg.Error, OSError):
                await pool.check()

        self._check_task = asyncio.get_running_loop().create_task(check())

    def _mark_down(self) -> None:
        """The server is unreachable: fail fast from now on, and probe in the background."""
        if self._pool is None or self._probe_task is not None:
            return
        self._probe_task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Until a fresh connection answers, try again every PROBE_INTERVAL seconds (a
        backoff in production code, not a test waiting); then let requests through."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=PROBE_CONNECT_TIMEOUT
                )
                async with conn:
                    await conn.execute("SELECT 1")
                break
            except (psycopg.Error, OSError):
                await asyncio.sleep(PROBE_INTERVAL)
        pool = self._pool
        if pool is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await pool.check()  # drop the connections that broke with the outage
        self._probe_task = None

    # -- open and close -----------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:  # open() is idempotent
            return
        pool: psycopg_pool.AsyncConnectionPool[Conn] = psycopg_pool.AsyncConnectionPool(
            self._conninfo,
            min_size=int(self._options["pool_min_size"]),
            max_size=int(self._options["pool_max_size"]),
            timeout=self._options["pool_timeout"],
            kwargs={"autocommit": True},
            configure=_configure,
            name="otpguard",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self._options["pool_timeout"])
            async with pool.connection() as conn:
                await self._migrate(conn)
        except psycopg_pool.PoolTimeout as exc:
            await pool.close()
            # The pool only says it timed out; one direct attempt says why
            # ('database "x" does not exist', an authentication failure, ...).
            reason = await self._connect_failure()
            if reason:
                raise StorageError(f"postgres store: open failed: {reason}") from exc
            raise
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def _connect_failure(self) -> str | None:
        """The server's reason a connection fails, or None (the server's text names
        the database and user, never the password)."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=max(1, int(self._options["pool_timeout"]))
            )
        except psycopg.Error as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            fatal = [line.split("FATAL:", 1)[1].strip() for line in lines if "FATAL:" in line]
            return (fatal or lines or [type(exc).__name__])[-1][:200]
        await conn.close()
        return None

    @staticmethod
    async def _migrate(conn: Conn) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise StorageError(
                    f"postgres store: schema version {version} is newer than this otpguard "
                    f"({len(MIGRATIONS)}); upgrade otpguard"
                )
            for n, step in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in step:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (n,))

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        tasks = (self._check_task, self._probe_task)
        self._check_task = self._probe_task = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if pool is not None:
            await pool.close()

    # -- one statement where SQLStore runs several ----------------------------------

    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        params = (now, now, now, verification_id, now, max_attempts, verification_id)
        row = await self._run(lambda cur: cur.one(q.RECORD_ATTEMPT, params))
        return None if row is None else ticket(row[:-1], bool(row[-1]))

    async def add_events(self, events: Sequence[Event]) -> None:
        if len(events) != 1:
            return await super().add_events(events)
        # The usual case: the event and its counts in one statement, one round trip.
        sql = f"WITH stored AS ({_pg(_EVENT)}) {counts_sql.PG_BUMP}"
        params = [*self._event_row(events[0]), *counts_sql.pg_arrays(counters.of_events(events))]
        await self._run(lambda cur: cur.run(sql, params))
        return None

    async def tally_refusal(self, minute: int, key: str, example: Event) -> int:
        repeat = counts_sql.pg_arrays(counters.increments([(minute, example)]))
        params = (minute, key, example.ts, Jsonb(example.to_dict()), *repeat)
        row = await self._run(lambda cur: cur.one(counts_sql.PG_TALLY, params))
        assert row is not None  # an upsert with RETURNING always returns its row
        return int(row[0])

    # -- rate windows (the server-side functions of postgres_sql.py) ----------------

    async def _hit(
        self, rules: Sequence[RateRule], now: float, cost: int, record: bool
    ) -> RateDecision:
        return await self._run(lambda cur: q.judged(cur, rules, now, cost, record))

    async def _hit_in(self, cur: Cursor, rules: Sequence[RateRule], now: float) -> RateDecision:
        return await q.judged(cur, rules, now, 1, True)

    async def _lock_keys(self, cur: Cursor, keys: Sequence[str]) -> None:
        if keys:
            await cur.run(q.LOCK_KEYS, (list(keys),))

    async def _release_in(self, cur: Cursor, keys: Sequence[str], at: float, cost: int) -> None:
        await cur.run(q.RELEASE, {"keys": list(keys), "at": at, "cost": cost})

    async def _record_in(self, cur: Cursor, keys: Sequence[str], now: float) -> None:
        await cur.run(q.RECORD, {"keys": list(keys), "now": now})

    async def _admit(
        self, rules: Sequence[RateRule], buckets: Sequence[Bucket], now: float,
        pressure: float | None, force: bool, start: Started | None,
    ) -> RateDecision:  # fmt: skip
        # One statement (otpguard_admit, its own transaction): one round trip, with a
        # start's verification and events written by the same statement when admitted.
        params = pa.admit_params(rules, buckets, now, pressure, force)
        sql = pa.ADMIT
        if start is not None:
            sql = pa.ADMIT_START
            params.update(pa.start_params(start, self._event_row))
        row = await self._run(lambda cur: cur.one(sql, params))
        if row is None:  # one of the start's unless_flags is set
            return FLAGS_FOUND
        refused = q.rule_refusal(rules, row, now) or pa.bucket_refusal(buckets, row)
        if refused is not None:
            return refused
        return allowed_decision(rules, [int(n) for n in row[1]], 1)

    async def _credit_in(
        self, cur: Cursor, buckets: Sequence[Bucket], refund: int, now: float
    ) -> None:
        params = q.judge_params((), buckets, now, 0, lock=False, record=False)
        row = await cur.one(q.JUDGE_CALL, params)
        assert row is not None
        states = q.bucket_states(buckets, row, now)
        after = [admission.after_approval(st, refund) for st in states]
        await cur.run(q.WRITE_BUCKETS, q.bucket_params(buckets, after, now))

    async def _counts(self, windows: Sequence[tuple[str, float]]) -> list[int]:
        sql = "SELECT " + ", ".join([rate_log.count("?", "?")] * len(windows))
        row = await self._run(lambda cur: cur.one(sql, rate_log.counts_params(windows)))
        assert row is not None
        return [int(n) for n in row]
