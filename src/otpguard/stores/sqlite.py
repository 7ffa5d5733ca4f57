"""The SQLite store: the harmless default, one file, several worker processes.

``SQLiteStore("sqlite:///otpguard.db")`` (relative), ``sqlite:////var/lib/otpguard.db``
(absolute) or ``sqlite://:memory:`` (tests).

The stdlib ``sqlite3`` module is synchronous. Verification operations are a few
short statements, so they run inline on the event loop (a thread hop costs more
than the work); having no ``await`` inside, each is atomic within the process,
and ``BEGIN IMMEDIATE`` (take the write lock before reading) makes each
read-then-write atomic across processes sharing the file. Long operations (purge
batches, dump) run on the store's one worker thread.

Durability: in WAL mode a committed transaction is in the WAL file (the OS has
it) before the call returns, so a verification survives the server being
SIGKILLed. The default ``synchronous=NORMAL`` does not fsync every commit: a
power loss or OS crash may lose the last moments of traffic. Add
``?synchronous=full`` to the URL to fsync every commit (several times slower).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .. import admission, counters
from ..errors import ConfigError, StorageError
from ..events import Event
from ..models import (
    AttemptOutcome,
    AttemptTicket,
    Bucket,
    RateDecision,
    RateRule,
    Status,
    Verification,
)
from . import counts_sql
from .base import (
    Alert,
    ApiKey,
    EventCount,
    EventQuery,
    RefusalTally,
    Store,
    allowed_decision,
)
from .sql import (
    A_COLUMNS,
    E_FIELDS,
    K_COLUMNS,
    SELECT_V,
    V_COLUMNS,
    V_PLACEHOLDERS,
    alert_from_row,
    api_key_from_row,
    event_conditions,
    tally_from_row,
    verification_from_row,
    verification_values,
)
from .sql_lists import SQLiteLists
from .sqlite_txn import transaction
from .webhooks_sqlite import MIGRATION as WEBHOOKS_MIGRATION
from .webhooks_sqlite import SQLiteWebhooks

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
BUCKET = 60  # seconds per rate_buckets row
CHECKPOINT_EVERY = 0.2  # seconds between WAL checkpoints from the worker thread
WAL_BACKSTOP_PAGES = 50_000  # SQLite's own checkpoint, should ours fall behind (~200 MB)
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is cut back to once it restarts
RECORD_ONLY = 2**40  # a rule with a limit this large never refuses: recorded, not counted
# Exact count of a sliding window (start, now]: the log entries of the partial minute
# at its start, plus the per-minute counts of every later minute.
_COUNT_SQL = (
    "(SELECT COUNT(*) FROM rate_log WHERE key = ? AND ts > ? AND ts < ?)"
    " + (SELECT COALESCE(SUM(n), 0) FROM rate_buckets WHERE key = ? AND start >= ?)"
)
PURGE_BATCH = 1_000  # rows per delete: a huge purge never holds the write lock for long

# Schema migrations: MIGRATIONS[n] upgrades PRAGMA user_version n -> n + 1.
# Append, never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE verifications (
            id TEXT PRIMARY KEY,
            to_number TEXT NOT NULL,
            channel TEXT NOT NULL,
            status TEXT NOT NULL,
            key_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            resend_available_at REAL NOT NULL,
            attempts INTEGER NOT NULL,
            sends INTEGER NOT NULL,
            client_ip TEXT,
            country TEXT,
            locale TEXT,
            code_length INTEGER NOT NULL DEFAULT 6,
            service_name TEXT
        )""",
        "CREATE INDEX verifications_to_status ON verifications (to_number, status, created_at)",
        "CREATE INDEX verifications_expires_at ON verifications (expires_at)",
        "CREATE TABLE rate_log (key TEXT NOT NULL, ts REAL NOT NULL)",
        "CREATE INDEX rate_log_key_ts ON rate_log (key, ts)",
        "CREATE INDEX rate_log_ts ON rate_log (ts)",
        "CREATE TABLE flags (key TEXT PRIMARY KEY, value TEXT NOT NULL, until REAL NOT NULL)",
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            ts REAL NOT NULL,
            verification_id TEXT,
            number_masked TEXT,
            number_hash TEXT,
            country TEXT,
            channel TEXT,
            client_ip TEXT,
            reason TEXT,
            rule TEXT,
            provider_code INTEGER,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX events_type ON events (type)",
        "CREATE INDEX events_number_hash ON events (number_hash)",
        "CREATE INDEX events_client_ip ON events (client_ip)",
        "CREATE INDEX events_country ON events (country)",
        "CREATE INDEX events_ts ON events (ts)",
        """CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            subject TEXT NOT NULL,
            status TEXT NOT NULL,
            opened_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            resolved_at REAL,
            message TEXT NOT NULL,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX alerts_updated_at ON alerts (updated_at)",
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
    ),
    # 2: per-minute counts beside the sliding log, so a long window is counted from
    # at most one minute of log entries plus one row per minute (``_COUNT_SQL``).
    (
        """CREATE TABLE rate_buckets (
            key TEXT NOT NULL,
            start INTEGER NOT NULL,
            n INTEGER NOT NULL,
            UNIQUE (key, start)
        )""",
        "CREATE INDEX rate_buckets_start ON rate_buckets (start)",
        "INSERT INTO rate_buckets (key, start, n) "
        "SELECT key, CAST(ts / 60 AS INTEGER) * 60, COUNT(*) FROM rate_log GROUP BY 1, 2",
    ),
    # 3: admission buckets (admission.py): one row per shared-capacity scope.
    (
        """CREATE TABLE buckets (
            key TEXT PRIMARY KEY,
            level REAL NOT NULL,
            earned REAL NOT NULL,
            t REAL NOT NULL,
            forget_at REAL NOT NULL
        )""",
        "CREATE INDEX buckets_forget_at ON buckets (forget_at)",
        "ALTER TABLE verifications ADD COLUMN owner TEXT",
    ),
    # 4: repeated refusals counted per minute and kind (refusals.py), not stored.
    (
        """CREATE TABLE refusal_tallies (
            minute INTEGER NOT NULL,
            key TEXT NOT NULL,
            count INTEGER NOT NULL,
            last_ts REAL NOT NULL,
            example TEXT NOT NULL,
            PRIMARY KEY (minute, key)
        )""",
        # Per-verification storage (docs/deploying-at-scale.md, "Sizing"): a type or a
        # country matches a large share of all events, so these indexes were never the
        # cheaper path (event lists walk the id order, the stats a ts range) and cost
        # about a tenth of every event's bytes.
        "DROP INDEX events_type",
        "DROP INDEX events_country",
    ),
    # 5, "purpose": what a code is for (purpose.py), kept for resends and answers.
    # NULL in older rows reads as a login code, as their tags are.
    (
        "ALTER TABLE verifications ADD COLUMN purpose TEXT",
        "ALTER TABLE verifications ADD COLUMN amount TEXT",
        "ALTER TABLE verifications ADD COLUMN currency TEXT",
        "ALTER TABLE verifications ADD COLUMN payee TEXT",
    ),
    # 6: webhooks: the outbox and delivery log (stores/webhooks_sqlite.py).
    WEBHOOKS_MIGRATION,
    # 7: events counted per minute and kind (counters.py), what stats and alerts read.
    (counts_sql.CREATE.format(int="INTEGER", collate="", options=" WITHOUT ROWID"),),
)


@contextlib.contextmanager
def _storage_errors(op: str) -> Iterator[None]:
    """The one place backend errors become StorageError; never echoes SQL or values."""
    try:
        yield
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
        raise StorageError(f"sqlite store: {op} failed ({name})") from exc
    except (BrokenExecutor, RuntimeError) as exc:  # executor shut down under us
        raise StorageError(f"sqlite store: {op} failed (store closed)") from exc


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


def _count_params(key: str, start: float) -> tuple[str, float, int, str, int]:
    edge = (int(start // BUCKET) + 1) * BUCKET  # the first whole minute in the window
    return key, start, edge, key, edge


def _count(conn: sqlite3.Connection, key: str, start: float) -> int:
    n: int = conn.execute(f"SELECT {_COUNT_SQL}", _count_params(key, start)).fetchone()[0]
    return n


def _judge_rules(
    conn: sqlite3.Connection, rules: Sequence[RateRule], now: float, cost: int
) -> tuple[RateDecision | None, list[int], list[str]]:
    """Inside a transaction: the first full rule's refusal (or None), every rule's
    count, and the keys an admitted event is recorded under."""
    skipped = set()
    seen = [(i, r) for i, r in enumerate(rules) if r.skip_if_seen is not None]
    if seen:
        sql = "SELECT " + ", ".join([f"({_COUNT_SQL})"] * len(seen))
        params = [p for _, r in seen for p in _count_params(str(r.skip_if_seen), now - r.window)]
        for (i, _), n in zip(seen, conn.execute(sql, params).fetchone(), strict=True):
            if n:
                skipped.add(i)
    counts = [0] * len(rules)
    counted = [
        i
        for i, r in enumerate(rules)
        if not r.record_only and r.limit < RECORD_ONLY and i not in skipped
    ]
    if counted:
        sql = "SELECT " + ", ".join([f"({_COUNT_SQL})"] * len(counted))
        params = [p for i in counted for p in _count_params(rules[i].key, now - rules[i].window)]
        for i, n in zip(counted, conn.execute(sql, params).fetchone(), strict=True):
            counts[i] = int(n)
    for i in counted:
        rule, n = rules[i], counts[i]
        if n + cost > rule.limit:
            # Room appears once the (n + cost - limit)-th oldest entry leaves.
            must_leave = n + cost - rule.limit
            if must_leave > n:  # cost > limit: never fits; a full window is the bound
                wait = float(rule.window)
            else:
                ts: float = conn.execute(
                    "SELECT ts FROM rate_log WHERE key = ? AND ts > ? ORDER BY ts LIMIT 1 OFFSET ?",
                    (rule.key, now - rule.window, must_leave - 1),
                ).fetchone()[0]
                wait = ts + rule.window - now
            return RateDecision(False, rule.name, wait, n, key=rule.key), counts, []
    # One event is one entry per key, even when several rules share a key.
    keys = list(dict.fromkeys(r.key for i, r in enumerate(rules) if i not in skipped))
    return None, counts, keys


def _record_rules(conn: sqlite3.Connection, keys: Sequence[str], now: float, cost: int) -> None:
    if not keys or not cost:
        return
    bucket = int(now // BUCKET) * BUCKET
    conn.executemany(
        "INSERT INTO rate_log (key, ts) VALUES (?, ?)",
        [(key, now) for key in keys for _ in range(cost)],
    )
    conn.executemany(
        "INSERT INTO rate_buckets (key, start, n) VALUES (?, ?, ?) "
        "ON CONFLICT (key, start) DO UPDATE SET n = n + excluded.n",
        [(key, bucket, cost) for key in keys],
    )


def _bucket_states(
    conn: sqlite3.Connection, buckets: Sequence[Bucket], now: float
) -> list[admission.Level]:
    if not buckets:
        return []
    marks = ", ".join("?" * len(buckets))
    rows = {
        str(k): (float(level), float(earned), float(t))
        for k, level, earned, t in conn.execute(
            f"SELECT key, level, earned, t FROM buckets WHERE key IN ({marks})",  # noqa: S608 - placeholders only
            [b.key for b in buckets],
        )
    }
    out = []
    for b in buckets:
        level, earned, t = rows.get(b.key, (0.0, 0.0, now))
        out.append(admission.decayed(level, earned, t, now, b.tau))
    return out


def _write_buckets(
    conn: sqlite3.Connection,
    buckets: Sequence[Bucket],
    states: Sequence[admission.Level],
    now: float,
) -> None:
    conn.executemany(
        "INSERT INTO buckets (key, level, earned, t, forget_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET level = excluded.level, earned = excluded.earned, "
        "t = excluded.t, forget_at = excluded.forget_at",
        [
            (b.key, st.level, st.earned, now, now + admission.FORGET_AFTER_TAUS * b.tau)
            for b, st in zip(buckets, states, strict=True)
        ],
    )


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


def _get(conn: sqlite3.Connection, verification_id: str) -> Verification | None:
    row = conn.execute(f"{SELECT_V} WHERE id = ?", (verification_id,)).fetchone()
    return None if row is None else verification_from_row(row)


class SQLiteStore(SQLiteWebhooks, SQLiteLists, Store):
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

    # -- plumbing ---------------------------------------------------------------

    async def _run(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` inline, on the event loop's thread.

        Every verification operation is a handful of short statements (tens of
        microseconds); a hop to a worker thread costs more than the work, and
        measured at about half the throughput. Running inline also makes each
        operation atomic within the process (there is no await inside it);
        ``BEGIN IMMEDIATE`` keeps it atomic across processes. Long operations
        (purge batches, dump) use :meth:`_run_in_thread`.

        When another process holds the write lock, SQLite's own busy handler would
        sleep right here, on the loop, stalling every request; the loop's connection
        has no busy timeout instead, and the operation is retried after an
        asynchronous pause (from 0.5 ms, doubling to 10 ms) for up to the busy
        timeout. The operation failed as a whole (its transaction had not begun, or
        was rolled back), so a retry is safe."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.0005
        while True:
            with _storage_errors(op):
                conn = self._conn
                if self._executor is None or conn is None:
                    raise StorageError(f"sqlite store: {op} failed (store is not open)")
                try:
                    result = fn(conn, *args)
                except sqlite3.OperationalError as exc:
                    busy = (exc.sqlite_errorcode or 0) & 0xFF == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() > deadline:
                        raise
                else:
                    break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
        # Hand the loop a turn after every operation. An inline operation never awaits,
        # so without this a request ran start to finish without the loop polling its
        # sockets, and under load a few connections starved: p99 was ~1.2 s at 64
        # clients, and 0.17 s with this yield, at the same throughput (bench/RESULTS.md).
        await asyncio.sleep(0)
        return result

    async def _run_in_thread(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the store's thread, with the thread's own
        connection, leaving the event loop free. (One connection must never serve
        both threads: their transactions would mix.) An in-memory database exists
        in one connection only, so there it runs inline."""
        if self.path == ":memory:":
            return await self._run(op, fn, *args)
        with _storage_errors(op):
            executor = self._executor
            if executor is None or self._conn is None:
                raise StorageError(f"sqlite store: {op} failed (store is not open)")
            return await asyncio.get_running_loop().run_in_executor(
                executor, self._on_bg_conn, fn, *args
            )

    def _on_bg_conn(self, fn: Callable[..., T], *args: Any) -> T:
        if self._bg_conn is None:
            self._bg_conn = self._open_conn()
        return fn(self._bg_conn, *args)

    async def _checkpoints(self) -> None:
        """Move the WAL into the database file from the worker thread every
        ``CHECKPOINT_EVERY`` seconds:
        left to SQLite, a checkpoint runs inside whichever commit fills the WAL, on
        the event loop, and stalls every request behind it."""
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            with contextlib.suppress(StorageError):
                await self._run_in_thread(
                    "checkpoint",
                    lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone(),
                )

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
            with _storage_errors("open"):
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
            with _storage_errors("close"):
                # Queued behind every operation already submitted.
                await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    async def health(self) -> None:
        await self._run("health", lambda conn: conn.execute("SELECT 1").fetchone())

    # -- verifications ------------------------------------------------------------

    async def create_verification(self, v: Verification) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO verifications ({V_COLUMNS}) "  # noqa: S608 - constant
                f"VALUES ({', '.join('?' * V_PLACEHOLDERS)})",
                verification_values(v),
            )

        await self._run("create_verification", run)

    async def get_verification(self, verification_id: str) -> Verification | None:
        return await self._run("get_verification", _get, verification_id)

    async def find_pending(self, to: str, now: float) -> Verification | None:
        def run(conn: sqlite3.Connection) -> Verification | None:
            row = conn.execute(
                f"{SELECT_V} WHERE to_number = ? AND status = 'pending' AND expires_at > ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1",
                (to, now),
            ).fetchone()
            return None if row is None else verification_from_row(row)

        return await self._run("find_pending", run)

    async def list_pending(
        self, to: str, now: float, *, owner: str | None, limit: int
    ) -> list[Verification]:
        def run(conn: sqlite3.Connection) -> list[Verification]:
            rows = conn.execute(
                f"{SELECT_V} WHERE to_number = ? AND status = 'pending' AND expires_at > ? "
                "AND (? IS NULL OR owner = ? OR owner IS NULL) "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (to, now, owner, owner, max(0, limit)),
            ).fetchall()
            return [verification_from_row(row) for row in rows]

        return await self._run("list_pending", run)

    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        def run(conn: sqlite3.Connection) -> AttemptTicket | None:
            with transaction(conn):
                v = _get(conn, verification_id)
                if v is None:
                    return None
                if v.status is not Status.PENDING:
                    return AttemptTicket(AttemptOutcome.NOT_PENDING, v)
                if v.expires_at <= now:
                    outcome, after = AttemptOutcome.EXPIRED, v.with_(status=Status.EXPIRED)
                elif v.attempts >= max_attempts:
                    # No attempt left; the status stays: the check that counted the last
                    # attempt approves or locks (see Store.record_attempt).
                    return AttemptTicket(AttemptOutcome.LOCKED, v)
                else:
                    outcome, after = AttemptOutcome.COUNTED, v.with_(attempts=v.attempts + 1)
                after = after.with_(updated_at=now)
                conn.execute(
                    "UPDATE verifications SET status = ?, attempts = ?, updated_at = ? "
                    "WHERE id = ?",
                    (after.status.value, after.attempts, now, verification_id),
                )
                return AttemptTicket(outcome, after)

        return await self._run("record_attempt", run)

    async def approve(self, verification_id: str, now: float, *, code_hash: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE verifications SET status = 'approved', updated_at = ? "
                "WHERE id = ? AND status = 'pending' AND expires_at > ? AND code_hash = ?",
                (now, verification_id, now, code_hash),
            )
            return cur.rowcount == 1

        return await self._run("approve", run)

    async def lock_if_exhausted(self, verification_id: str, max_attempts: int, now: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE verifications SET status = 'max_attempts_reached', updated_at = ? "
                "WHERE id = ? AND status = 'pending' AND attempts >= ?",
                (now, verification_id, max_attempts),
            )
            return cur.rowcount == 1

        return await self._run("lock_if_exhausted", run)

    async def replace_code(
        self,
        verification_id: str,
        key_id: str,
        code_hash: str,
        now: float,
        expires_at: float,
        resend_available_at: float,
    ) -> Verification | None:
        def run(conn: sqlite3.Connection) -> Verification | None:
            with transaction(conn):
                cur = conn.execute(
                    "UPDATE verifications SET key_id = ?, code_hash = ?, expires_at = ?, "
                    "resend_available_at = ?, updated_at = ?, sends = sends + 1 "
                    "WHERE id = ? AND status = 'pending' AND expires_at > ? "
                    "AND resend_available_at <= ?",
                    (key_id, code_hash, expires_at, resend_available_at, now,
                     verification_id, now, now),
                )  # fmt: skip
                return _get(conn, verification_id) if cur.rowcount == 1 else None

        return await self._run("replace_code", run)

    async def transition(
        self, verification_id: str, from_statuses: Sequence[Status], to: Status, now: float
    ) -> Verification | None:
        allowed = json.dumps([Status(s).value for s in from_statuses])

        def run(conn: sqlite3.Connection) -> Verification | None:
            with transaction(conn):
                cur = conn.execute(
                    "UPDATE verifications SET status = ?, updated_at = ? WHERE id = ? "
                    "AND status IN (SELECT value FROM json_each(?))",
                    (Status(to).value, now, verification_id, allowed),
                )
                return _get(conn, verification_id) if cur.rowcount == 1 else None

        return await self._run("transition", run)

    # -- rate windows ---------------------------------------------------------------

    async def hit(
        self, rules: Sequence[RateRule], now: float, cost: int = 1, record: bool = True
    ) -> RateDecision:
        if cost < 0:
            raise ValueError("cost must be >= 0")
        if not rules:
            return RateDecision(allowed=True)
        rules = tuple(rules)

        def run(conn: sqlite3.Connection) -> RateDecision:
            # A peek only reads: a deferred transaction gives it one consistent snapshot.
            with transaction(conn, "IMMEDIATE" if record else "DEFERRED"):
                refusal, counts, keys = _judge_rules(conn, rules, now, cost)
                if refusal is not None:
                    return refusal
                if record and cost:
                    _record_rules(conn, keys, now, cost)
            return allowed_decision(rules, counts, cost if record else 0)

        return await self._run("hit", run)

    async def release(self, keys: Sequence[str], at: float, cost: int = 1) -> None:
        keys = list(dict.fromkeys(keys))
        if not keys or cost <= 0:
            return
        bucket = int(at // BUCKET) * BUCKET

        def run(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                for key in keys:
                    cur = conn.execute(
                        "DELETE FROM rate_log WHERE rowid IN "
                        "(SELECT rowid FROM rate_log WHERE key = ? AND ts = ? LIMIT ?)",
                        (key, at, cost),
                    )
                    if cur.rowcount > 0:  # the per-minute count the window also reads
                        conn.execute(
                            "UPDATE rate_buckets SET n = max(0, n - ?) WHERE key = ? AND start = ?",
                            (cur.rowcount, key, bucket),
                        )

        await self._run("release", run)

    async def admit(
        self,
        rules: Sequence[RateRule],
        buckets: Sequence[Bucket],
        now: float,
        *,
        pressure: float | None = None,
        force: bool = False,
    ) -> RateDecision:
        rules, buckets = tuple(rules), tuple(buckets)

        def run(conn: sqlite3.Connection) -> RateDecision:
            with transaction(conn):
                refusal, counts, keys = _judge_rules(conn, rules, now, 1)
                if refusal is not None:
                    return refusal
                states = _bucket_states(conn, buckets, now)
                refusal = None if force else admission.judge(buckets, states, pressure)
                if refusal is not None:
                    return refusal
                _record_rules(conn, keys, now, 1)
                _write_buckets(conn, buckets, [admission.after_send(st, 1) for st in states], now)
            return allowed_decision(rules, counts, 1)

        return await self._run("admit", run)

    async def credit(self, buckets: Sequence[Bucket], refund: int, now: float) -> None:
        buckets = tuple(buckets)
        if not buckets:
            return

        def run(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                states = _bucket_states(conn, buckets, now)
                after = [admission.after_approval(st, refund) for st in states]
                _write_buckets(conn, buckets, after, now)

        await self._run("credit", run)

    async def count(self, key: str, window: int, now: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return _count(conn, key, now - window)

        return await self._run("count", run)

    async def counts(self, queries: Sequence[tuple[str, int]], now: float) -> list[int]:
        if not queries:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            sql = "SELECT " + ", ".join([f"({_COUNT_SQL})"] * len(queries))
            params = [p for key, window in queries for p in _count_params(key, now - window)]
            return [int(n) for n in conn.execute(sql, params).fetchone()]

        return await self._run("counts", run)

    # -- flags ----------------------------------------------------------------------

    async def set_flag(self, key: str, value: str, until: float) -> None:
        await self._run(
            "set_flag",
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO flags (key, value, until) VALUES (?, ?, ?)",
                (key, value, until),
            ),
        )

    async def get_flag(self, key: str, now: float) -> str | None:
        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM flags WHERE key = ? AND until > ?", (key, now)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run("get_flag", run)

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        if not keys:
            return {}

        def run(conn: sqlite3.Connection) -> dict[str, str]:
            marks = ", ".join("?" * len(keys))
            rows = conn.execute(
                f"SELECT key, value FROM flags WHERE key IN ({marks}) AND until > ?",  # noqa: S608 - placeholders only
                [*keys, now],
            ).fetchall()
            return {str(k): str(v) for k, v in rows}

        return await self._run("get_flags", run)

    # -- events ---------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event]) -> None:
        rows = [
            (e.id, e.type, e.ts, e.verification_id, e.number_masked, e.number_hash, e.country,
             e.channel, e.client_ip, e.reason, e.rule, e.provider_code,
             json.dumps(e.details, separators=(",", ":"), sort_keys=True))
            for e in events
        ]  # fmt: skip
        if not rows:
            return

        counts = counters.of_events(events)

        def run(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(
                    f"INSERT INTO events ({', '.join(E_FIELDS)}) "  # noqa: S608 - constant
                    f"VALUES ({', '.join('?' * len(E_FIELDS))})",
                    rows,
                )
                counts_sql.sqlite_bump(conn, counts)

        await self._run("add_events", run)

    async def list_events(self, query: EventQuery) -> list[Event]:
        where, params = event_conditions(query, "?")
        if query.types:
            where.append("type IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(query.types)))
        sql = f"SELECT {', '.join(E_FIELDS)} FROM events"  # noqa: S608 - fixed columns
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(0, query.limit))

        def run(conn: sqlite3.Connection) -> list[Event]:
            out = []
            for row in conn.execute(sql, params):
                data = dict(zip(E_FIELDS, row, strict=True))
                data["details"] = json.loads(data["details"])
                out.append(Event(**data))
            return out

        if query.limit > 500:  # a big page (the alert job, stats): leave the loop free
            return await self._run_in_thread("list_events", run)
        return await self._run("list_events", run)

    async def tally_refusal(self, minute: int, key: str, example: Event) -> int:
        row = (minute, key, example.ts, example.to_json())
        repeat = counters.increments([(minute, example)])

        def run(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                count: int = conn.execute(
                    "INSERT INTO refusal_tallies (minute, key, count, last_ts, example) "
                    "VALUES (?, ?, 1, ?, ?) ON CONFLICT (minute, key) DO UPDATE SET "
                    "count = count + 1, last_ts = MAX(last_ts, excluded.last_ts) "
                    "RETURNING count",
                    row,
                ).fetchone()[0]
                if count > 1:  # the first is counted when it is stored as an event
                    counts_sql.sqlite_bump(conn, repeat)
            return count

        return await self._run("tally_refusal", run)

    async def list_refusal_tallies(self, since: float, until: float) -> list[RefusalTally]:
        def run(conn: sqlite3.Connection) -> list[RefusalTally]:
            rows = conn.execute(
                "SELECT minute, key, count, last_ts, example FROM refusal_tallies "
                "WHERE minute > ? AND minute < ?",
                (since - 60, until),
            )
            return [tally_from_row(row, json.loads) for row in rows]

        return await self._run_in_thread("list_refusal_tallies", run)

    async def list_event_counts(
        self, since: float, until: float, families: Sequence[str]
    ) -> list[EventCount]:
        return await self._run_in_thread(
            "list_event_counts", counts_sql.sqlite_list, since, until, families
        )

    async def top_event_counts(
        self, family: str, since: float, until: float, limit: int
    ) -> list[tuple[str, int]]:
        return await self._run_in_thread(
            "top_event_counts", counts_sql.sqlite_top, family, since, until, limit
        )

    # -- alerts ---------------------------------------------------------------------

    async def put_alert(self, alert: Alert) -> None:
        row = (
            alert.id, alert.rule, alert.subject, alert.status, alert.opened_at, alert.updated_at,
            alert.resolved_at, alert.message,
            json.dumps(alert.details, separators=(",", ":"), sort_keys=True),
        )  # fmt: skip
        await self._run(
            "put_alert",
            lambda conn: conn.execute(
                f"INSERT OR REPLACE INTO alerts ({A_COLUMNS}) "  # noqa: S608 - constant
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            ),
        )

    async def list_alerts(
        self, since: float | None = None, status: str | None = None
    ) -> list[Alert]:
        def run(conn: sqlite3.Connection) -> list[Alert]:
            rows = conn.execute(
                f"SELECT {A_COLUMNS} FROM alerts "  # noqa: S608 - constant
                "WHERE (? IS NULL OR updated_at >= ?) AND (? IS NULL OR status = ?) "
                "ORDER BY updated_at DESC, id DESC",
                (since, since, status, status),
            )
            return [alert_from_row(row, json.loads) for row in rows]

        return await self._run("list_alerts", run)

    # -- API keys -------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey) -> None:
        row = (key.id, key.name, key.key_hash, json.dumps(list(key.scopes)), key.created_at,
               key.revoked_at)  # fmt: skip
        await self._run(
            "create_api_key",
            lambda conn: conn.execute(
                f"INSERT INTO api_keys ({K_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                row,
            ),
        )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        def run(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute(
                f"SELECT {K_COLUMNS} FROM api_keys WHERE id = ?",  # noqa: S608 - constant
                (key_id,),
            ).fetchone()
            return None if row is None else api_key_from_row(row, json.loads)

        return await self._run("get_api_key", run)

    async def list_api_keys(self) -> list[ApiKey]:
        def run(conn: sqlite3.Connection) -> list[ApiKey]:
            rows = conn.execute(
                f"SELECT {K_COLUMNS} FROM api_keys ORDER BY created_at, id"  # noqa: S608
            )
            return [api_key_from_row(row, json.loads) for row in rows]

        return await self._run("list_api_keys", run)

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            return cur.rowcount == 1

        return await self._run("revoke_api_key", run)

    # -- maintenance ----------------------------------------------------------------

    async def purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        jobs = (
            ("verifications", "expires_at < ?", now - verification_grace),
            ("rate_log", "ts < ?", now - rate_horizon),
            ("rate_buckets", "start < ?", now - rate_horizon - BUCKET),
            ("events", "ts < ?", now - event_horizon),
            ("refusal_tallies", "minute < ?", now - event_horizon - 60),
            ("flags", "until <= ?", now),
            ("buckets", "forget_at < ?", now),
            *(("event_counts", counts_sql.sql(c, "?"), now - event_horizon - 60)
              for c in counts_sql.PURGE_CONDITIONS),
        )  # fmt: skip

        def delete_batch(conn: sqlite3.Connection, table: str, condition: str, bound: float) -> int:
            key = counts_sql.SQLITE_KEY if table == "event_counts" else "rowid"
            cur = conn.execute(
                f"DELETE FROM {table} WHERE {key} IN "  # noqa: S608 - constant names
                f"(SELECT {key.strip('()')} FROM {table} WHERE {condition} LIMIT ?)",
                (bound, PURGE_BATCH),
            )
            return cur.rowcount

        total = 0
        for table, condition, bound in jobs:
            while True:  # one short write transaction per batch; other work interleaves
                removed = await self._run_in_thread("purge", delete_batch, table, condition, bound)
                # rate_buckets index rate_log, event_counts sum events: not rows of data
                if table not in ("rate_buckets", "event_counts"):
                    total += removed
                if removed < PURGE_BATCH:
                    break
        return total

    async def dump(self) -> str:
        def run(conn: sqlite3.Connection) -> str:
            lines: list[str] = []
            with transaction(conn, "DEFERRED"):
                tables = conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                ).fetchall()
                for (table,) in tables:
                    cur = conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - from schema
                    lines.append(f"== {table}: " + "\t".join(d[0] for d in cur.description))
                    lines.extend("\t".join(str(value) for value in row) for row in cur)
            return "\n".join(lines) + "\n"

        return await self._run_in_thread("dump", run)
