"""The SQLite store: the harmless default, one file, several worker processes.

``SQLiteStore("sqlite:///otpguard.db")`` (relative), ``sqlite:////var/lib/otpguard.db``
(absolute) or ``sqlite://:memory:`` (tests).

The stdlib ``sqlite3`` module is synchronous. Verification operations are a few
short statements, so they run inline on the event loop (a thread hop costs more
than the work); having no real ``await`` inside (the cursor's coroutines never
suspend), each is atomic within the process, and ``BEGIN IMMEDIATE`` (take the
write lock before reading) makes each read-then-write atomic across processes
sharing the file. Long operations (purge batches, big reads) run on the store's
one worker thread.

Durability: in WAL mode a committed transaction is in the WAL file (the OS has
it) before the call returns, so a verification survives the server being
SIGKILLed. The default ``synchronous=NORMAL`` does not fsync every commit: a
power loss or OS crash may lose the last moments of traffic. Add
``?synchronous=full`` to the URL to fsync every commit (several times slower).

The shared operations are ``SQLStore``'s; this module keeps the connections, WAL
checkpoints, the busy retry and the rate windows (``sqlite_rates.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError, StorageError
from ..models import Bucket, RateDecision, RateRule
from . import rate_log
from . import sql_schema as schema
from . import sqlite_rates as rates
from .base import Started
from .decisions import FLAGS_FOUND
from .opening import CheckClosed, CheckOpening, Judge
from .sql import READ, WRITE, Body, Cursor, Row, Unavailable
from .sql_store import SQLStore
from .sqlite_txn import transaction

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_EVERY = 0.2  # seconds between WAL checkpoints from the worker thread
#: A new file's page size (an existing one keeps its own). A commit writes each page it
#: changed to the WAL whole, and a pair changes dozens of scattered index pages: 1 KB
#: pages write a third of the bytes 4 KB ones do (bench/sqlite_pages.py).
PAGE_SIZE = 1024
WAL_BACKSTOP_PAGES = 200_000  # SQLite's own checkpoint, should ours fall behind (~200 MB)
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is cut back to once it restarts
PURGE_BATCH = 1_000  # rows per delete: a huge purge never holds the write lock for long

# Schema migrations: MIGRATIONS[n] upgrades PRAGMA user_version n -> n + 1.
# Append, never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = schema.render(
    (
        schema.first_step(),
        rates.MIGRATION_2,  # 2: per-minute counts beside the sliding log
        schema.BUCKETS,  # 3
        schema.REFUSALS,  # 4
        schema.PURPOSE,  # 5
        schema.WEBHOOKS,  # 6
        schema.COUNTS,  # 7
        # 8: windows counted from a running count per key (rate_log.py), which makes
        # the per-minute counts of step 2 unnecessary.
        (*rate_log.migration("rowid"), "DROP TABLE rate_buckets"),
        schema.SERVICE,  # 9: the verification's /v2 service in its row
        schema.services(lambda name: f"json_extract(value, '$.{name}')"),  # 10
        schema.SIGNED_OUT,  # 11
    ),
    schema.SQLITE,
)


def _sync_from_url(url: str) -> str:
    _, _, query = url.partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    unknown = set(params) - {"synchronous"}
    if unknown:
        raise ConfigError(f"OTPGUARD_STORE: unknown sqlite URL parameter(s) {sorted(unknown)}")
    mode = params.get("synchronous", "normal").upper()
    if mode not in ("NORMAL", "FULL"):
        raise ConfigError("OTPGUARD_STORE: sqlite synchronous must be normal or full")
    return mode


def _path_from_url(url: str) -> str:
    prefix = "sqlite://"
    if not url.lower().startswith(prefix):
        raise ConfigError(f"OTPGUARD_STORE: not a sqlite URL: {url!r}")
    rest = url[len(prefix) :].partition("?")[0]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(
            "OTPGUARD_STORE: use sqlite:///relative.db, sqlite:////absolute.db or sqlite://:memory:"
        )
    return rest[1:]


class _Cursor:
    """``sql.Cursor`` over a sqlite3 connection: coroutines that never suspend."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        # Every row, so the statement runs to its end (an UPDATE ... RETURNING left
        # unfinished would hold its implicit transaction open).
        rows = self.conn.execute(sql, params).fetchall()
        return rows[0] if rows else None

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.executemany(sql, rows)


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (a body over ``_Cursor``), run
    to its end right here, on whichever thread holds the connection."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("a SQLite operation must not await anything but its cursor")


def _execute(conn: sqlite3.Connection, body: Body[T], mode: str | None) -> T:
    if mode is None:
        return _drive(body(_Cursor(conn)))
    with transaction(conn, mode):
        return _drive(body(_Cursor(conn)))


class SQLiteStore(SQLStore):
    backend = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = _path_from_url(url)
        self.synchronous = _sync_from_url(url)
        self._conn: sqlite3.Connection | None = None  # the event loop's
        self._bg_conn: sqlite3.Connection | None = None  # the worker thread's (file DBs)
        self._executor: ThreadPoolExecutor | None = None
        self._checkpointer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    def backend_error(self, exc: Exception) -> str | None:
        if isinstance(exc, sqlite3.Error):
            return getattr(exc, "sqlite_errorname", None) or type(exc).__name__
        if isinstance(exc, Unavailable):
            return str(exc)
        return None

    # -- the dialect --------------------------------------------------------------

    def _json_in(self, value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)

    def _json_out(self, stored: Any) -> Any:
        return json.loads(stored)

    def _delete_batch(self, table: str, condition: str) -> str:
        key = "family, minute, kind" if table == "event_counts" else "rowid"  # no rowid there
        return (
            f"DELETE FROM {table} WHERE ({key}) IN "  # noqa: S608 - constant names
            f"(SELECT {key} FROM {table} WHERE {condition} LIMIT ?)"
        )

    def _purge_batch(self) -> int:
        return PURGE_BATCH

    async def _run(self, body: Body[T], mode: str | None = None, *, slow: bool = False) -> T:
        """Run ``body`` inline, on the event loop's thread (``slow``: on the worker
        thread, see :meth:`_run_in_thread`).

        Every verification operation is a handful of short statements (tens of
        microseconds); a hop to a worker thread costs more than the work, and
        measured at about half the throughput. Running inline also makes each
        operation atomic within the process; ``BEGIN IMMEDIATE`` keeps it atomic
        across processes.

        When another process holds the write lock, SQLite's own busy handler would
        sleep right here, on the loop, stalling every request; the loop's connection
        has no busy timeout instead, and the operation is retried after an
        asynchronous pause (from 0.5 ms, doubling to 10 ms) for up to the busy
        timeout. The operation failed as a whole (its transaction had not begun, or
        was rolled back), so a retry is safe."""
        if slow and self.path != ":memory:":
            return await self._run_in_thread(body, mode)
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.0005
        while True:
            if self._executor is None or self._conn is None:
                raise Unavailable("store is not open")
            try:
                result = _execute(self._conn, body, mode)
                break
            except sqlite3.OperationalError as exc:
                busy = (exc.sqlite_errorcode or 0) & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
        # Hand the loop a turn after every operation. An inline operation never awaits,
        # so without this a request ran start to finish without the loop polling its
        # sockets, and under load a few connections starved: p99 was ~1.2 s at 64
        # clients, and 0.17 s with this yield, at the same throughput (bench/RESULTS.md).
        await asyncio.sleep(0)
        return result

    async def _run_in_thread(self, body: Body[T], mode: str | None) -> T:
        """Run ``body`` on the store's thread, with the thread's own connection,
        leaving the event loop free. (One connection must never serve both threads:
        their transactions would mix.) An in-memory database exists in one
        connection only, so it never comes here."""
        executor = self._executor
        if executor is None or self._conn is None:
            raise Unavailable("store is not open")
        try:
            future = asyncio.get_running_loop().run_in_executor(
                executor, self._on_bg_conn, body, mode
            )
        except RuntimeError as exc:  # the executor was shut down under us
            raise Unavailable("store closed") from exc
        try:
            return await future
        except BrokenExecutor as exc:
            raise Unavailable("store closed") from exc

    def _on_bg_conn(self, body: Body[T], mode: str | None) -> T:
        if self._bg_conn is None:
            self._bg_conn = self._open_conn()
        return _execute(self._bg_conn, body, mode)

    async def _checkpoints(self) -> None:
        """Move the WAL into the database file from the worker thread every
        ``CHECKPOINT_EVERY`` seconds: left to SQLite, a checkpoint runs inside
        whichever commit fills the WAL, on the event loop, and stalls every request
        behind it."""
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            with contextlib.suppress(sqlite3.Error, Unavailable):
                await self._run(lambda cur: cur.one("PRAGMA wal_checkpoint(PASSIVE)"), slow=True)

    # -- connections --------------------------------------------------------------

    def _connect(self) -> None:
        if self._conn is not None:  # open() is idempotent
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._open_conn()
        try:
            self._migrate(conn)  # several processes may start at once: wait for the lock
            conn.execute("PRAGMA busy_timeout = 0")  # then the loop never sleeps in SQLite
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Before anything creates the file's first page; a no-op on an existing file.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")  # stays "memory" for :memory:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Checkpoints run from the worker thread (see _checkpoints); SQLite's own
            # stays as a backstop should the WAL outgrow this many pages.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StorageError(
                    f"sqlite store: schema version {version} is newer than this otpguard "
                    f"({len(MIGRATIONS)}); upgrade otpguard"
                )
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            if version < len(MIGRATIONS):
                conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    def _disconnect(self) -> None:
        for conn in (self._conn, self._bg_conn):
            if conn is not None:
                conn.close()
        self._conn = self._bg_conn = None

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpguard-sqlite")
        executor = self._executor
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._connect)
            if self.path != ":memory:" and self._checkpointer is None:
                self._checkpointer = asyncio.create_task(self._checkpoints())
        except BaseException:
            if self._conn is None and self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False)
            raise

    async def aclose(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpointer
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            # Queued behind every operation already submitted.
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    async def check_by_id(self, o: CheckOpening, judge: Judge) -> CheckClosed:
        """In one write transaction, one commit (``SQLStore._check_in``)."""
        return await self._run(lambda cur: self._check_in(cur, o, judge), WRITE)

    # -- rate windows (sqlite_rates.py) -------------------------------------------

    async def _hit(
        self, rules: Sequence[RateRule], now: float, cost: int, record: bool
    ) -> RateDecision:
        # A peek only reads: a deferred transaction gives it one consistent snapshot.
        return await self._run(rates.hit(rules, now, cost, record), WRITE if record else READ)

    async def _hit_in(self, cur: Cursor, rules: Sequence[RateRule], now: float) -> RateDecision:
        return await rates.hit(rules, now, 1, True)(cur)

    async def _release_in(self, cur: Cursor, keys: Sequence[str], at: float, cost: int) -> None:
        await rates.release(keys, at, cost)(cur)

    async def _admit(
        self, rules: Sequence[RateRule], buckets: Sequence[Bucket], now: float,
        pressure: float | None, force: bool, start: Started | None,
    ) -> RateDecision:  # fmt: skip
        admit = rates.admit(rules, buckets, now, pressure, force)
        if start is None:
            return await self._run(admit, WRITE)

        async def run(cur: Cursor) -> RateDecision:
            if start.unless_flags and await self._flags_in(cur, start.unless_flags, now):
                return FLAGS_FOUND
            decision = await admit(cur)
            if decision.allowed:
                await self._write_start(cur, start)
            return decision

        return await self._run(run, WRITE)

    async def _credit_in(
        self, cur: Cursor, buckets: Sequence[Bucket], refund: int, now: float
    ) -> None:
        await rates.credit(buckets, refund, now)(cur)

    async def _record_in(self, cur: Cursor, keys: Sequence[str], now: float) -> None:
        await rates.record_entries(cur, keys, now, 1)

    async def _counts(self, windows: Sequence[tuple[str, float]]) -> list[int]:
        return await self._run(lambda cur: rates.counts(cur, windows))
