"""The PostgreSQL store: several otpguard instances sharing one database.

``PostgresStore("postgresql://user:password@host:5432/db")``; ``postgres://`` works
too. Three query parameters are otpguard's own and are removed before the URL
reaches libpq: ``pool_min_size`` (default 2), ``pool_max_size`` (default 10) and
``pool_timeout`` (seconds to wait for a connection, default 5). Every other
parameter (``sslmode``, ``options``, ...) is libpq's.

Each process holds one :class:`psycopg_pool.AsyncConnectionPool` of autocommit
connections. Every operation is one statement or one transaction:

* single-row state changes are conditional ``UPDATE ... RETURNING`` statements;
* ``record_attempt`` is one statement: the conditional UPDATE, or when it changed
  nothing, the row read ``FOR UPDATE`` (the newest committed version) to say why;
* ``hit`` is one call of the ``otpguard_judge`` function (created by the
  migrations): it takes ``pg_advisory_xact_lock(hashtext(key))`` for each key in
  hash order (no deadlocks), then counts and inserts under the locks, all in one
  transaction. ``skip_if_seen`` keys are counted inside it, under their locks;
* ``admit`` and ``credit`` are one transaction: ``otpguard_judge`` locks every rate
  and bucket key (hash order), judges the rules and returns the buckets' rows; the
  bucket arithmetic runs here, in Python (``otpguard.admission``, the same code as
  SQLite's), and one statement writes the rate entries and the buckets.

The schema is created and upgraded by ``MIGRATIONS`` on ``open()``, in one
transaction holding an advisory lock, so instances starting together do not race;
``schema_migrations`` records the versions applied.

When PostgreSQL goes away every operation raises StorageError (fail closed). Once
an operation has found the server unreachable, the store knows it is down: every
operation fails at once (no wait of ``pool_timeout`` per request) while a background
probe tries a fresh connection every ``PROBE_INTERVAL`` seconds; when one answers,
the pool drops its broken connections and the store serves again, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

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
from .sql_lists import PostgresLists
from .webhooks_pg import MIGRATION as WEBHOOKS_MIGRATION
from .webhooks_pg import TABLES as WEBHOOK_TABLES
from .webhooks_pg import PostgresWebhooks

Conn = psycopg.AsyncConnection[TupleRow]

PURGE_BATCH = 5_000  # rows per DELETE: a huge purge never holds locks for long
MIGRATION_LOCK = 0x6F7470677561  # "otpgua": the advisory lock key of the migrations
POOL_DEFAULTS = {"pool_min_size": 2, "pool_max_size": 10, "pool_timeout": 5.0}
RECORD_ONLY = 2**40  # a rule with a limit this large never refuses (as in the SQLite store)
PROBE_INTERVAL = 0.25  # seconds between reconnection probes while the server is down
PROBE_CONNECT_TIMEOUT = 3  # libpq's connect_timeout (whole seconds, at least 2) per probe
#: SQLSTATEs meaning "the server is not there" (besides errors without one, and PoolTimeout)
_UNREACHABLE_STATES = ("57P01", "57P02", "57P03")  # admin/crash shutdown, cannot connect now

#: Every table the store owns (the contract tests' reset hook truncates them).
TABLES = (
    "verifications", "rate_log", "flags", "events", "alerts", "api_keys", "buckets",
    "refusal_tallies", "event_counts", *WEBHOOK_TABLES,
)  # fmt: skip

_HIT_FUNCTION = """
CREATE FUNCTION otpguard_hit(
    p_keys text[], p_starts float8[], p_limits int[], p_cost int, p_now float8, p_record bool
) RETURNS TABLE (refused int, counts bigint[], oldest float8)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    i int;
    n bigint;
    must_leave bigint;
BEGIN
    -- Each statement of a VOLATILE function takes a fresh snapshot, so the counts
    -- below see everything committed by whoever held these locks before us.
    IF p_record THEN
        PERFORM pg_advisory_xact_lock(h)
        FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(p_keys) AS k ORDER BY 1) AS s;
    END IF;
    counts := '{}';
    refused := 0;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        SELECT count(*) INTO n FROM rate_log WHERE key = p_keys[i] AND ts > p_starts[i];
        counts := counts || n;
        IF n + p_cost > p_limits[i] THEN
            refused := i;
            must_leave := n + p_cost - p_limits[i];
            IF must_leave <= n THEN
                SELECT ts INTO oldest FROM rate_log WHERE key = p_keys[i] AND ts > p_starts[i]
                ORDER BY ts OFFSET must_leave - 1 LIMIT 1;
            END IF;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
    IF p_record AND p_cost > 0 THEN
        INSERT INTO rate_log (key, ts)
        SELECT k, p_now FROM (SELECT DISTINCT k FROM unnest(p_keys) AS k) AS d,
            generate_series(1, p_cost);
    END IF;
    RETURN NEXT;
END
$fn$
"""

# The rules part of hit and admit. Per rule i: key, window start, limit, enforced
# (false for record-only rules: not counted, never refusing) and the skip_if_seen
# key (NULL for none; when it has an entry since the rule's start the rule is
# neither enforced nor recorded). p_lock takes the advisory locks of every key,
# seen key and bucket key (in hash order); p_record inserts the entries of an
# allowed event (admit records later, after judging the buckets). When nothing
# refused, the rows of p_buckets (NULL for a missing row) come back in order,
# read after the locks were taken.
_JUDGE_FUNCTION = """
CREATE FUNCTION otpguard_judge(
    p_keys text[], p_starts float8[], p_limits bigint[], p_enforced bool[], p_seen text[],
    p_cost bigint, p_now float8, p_lock bool, p_record bool, p_buckets text[]
) RETURNS TABLE (
    refused int, counts bigint[], oldest float8, skipped bool[],
    b_level float8[], b_earned float8[], b_t float8[]
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    i int;
    n bigint;
    must_leave bigint;
    skip bool;
BEGIN
    -- Each statement of a VOLATILE function takes a fresh snapshot, so the reads
    -- below see everything committed by whoever held these locks before us.
    IF p_lock THEN
        PERFORM pg_advisory_xact_lock(h)
        FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(p_keys || p_seen || p_buckets) AS k
              WHERE k IS NOT NULL ORDER BY 1) AS s;
    END IF;
    counts := '{}';
    skipped := '{}';
    refused := 0;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        skip := p_seen[i] IS NOT NULL AND EXISTS (
            SELECT 1 FROM rate_log WHERE key = p_seen[i] AND ts > p_starts[i]);
        skipped := skipped || skip;
        n := 0;
        IF p_enforced[i] AND NOT skip THEN
            SELECT count(*) INTO n FROM rate_log WHERE key = p_keys[i] AND ts > p_starts[i];
            IF n + p_cost > p_limits[i] THEN
                counts := counts || n;
                refused := i;
                must_leave := n + p_cost - p_limits[i];
                IF must_leave <= n THEN
                    SELECT ts INTO oldest FROM rate_log
                    WHERE key = p_keys[i] AND ts > p_starts[i]
                    ORDER BY ts OFFSET must_leave - 1 LIMIT 1;
                END IF;
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;
        counts := counts || n;
    END LOOP;
    IF p_record AND p_cost > 0 THEN
        -- One event is one entry per key, even when several rules share a key.
        INSERT INTO rate_log (key, ts)
        SELECT k, p_now
        FROM (SELECT DISTINCT p_keys[j] AS k FROM generate_subscripts(p_keys, 1) AS j
              WHERE NOT skipped[j]) AS d,
            generate_series(1, p_cost);
    END IF;
    IF coalesce(array_length(p_buckets, 1), 0) > 0 THEN
        SELECT array_agg(b.level ORDER BY u.o), array_agg(b.earned ORDER BY u.o),
            array_agg(b.t ORDER BY u.o)
        INTO b_level, b_earned, b_t
        FROM unnest(p_buckets) WITH ORDINALITY AS u(k, o) LEFT JOIN buckets AS b ON b.key = u.k;
    END IF;
    RETURN NEXT;
END
$fn$
"""

_JUDGE_CALL = (
    "SELECT refused, counts, oldest, skipped, b_level, b_earned, b_t FROM otpguard_judge("
    "%s::text[], %s::float8[], %s::int8[], %s::bool[], %s::text[], %s::int8, %s::float8, "
    "%s::bool, %s::bool, %s::text[])"
)

# The writes of an admitted send or an approval: rate entries and bucket rows.
_WRITE_ADMISSION = """
WITH entries AS (
    INSERT INTO rate_log (key, ts) SELECT k, %(now)s FROM unnest(%(keys)s::text[]) AS k
)
INSERT INTO buckets (key, level, earned, t, forget_at)
SELECT * FROM unnest(%(b_keys)s::text[], %(b_level)s::float8[], %(b_earned)s::float8[],
    %(b_t)s::float8[], %(b_forget)s::float8[])
ON CONFLICT (key) DO UPDATE SET level = EXCLUDED.level, earned = EXCLUDED.earned,
    t = EXCLUDED.t, forget_at = EXCLUDED.forget_at
"""

# Store.release, after the keys' advisory locks (the ones hit and admit take): up to
# cost entries at exactly ``at`` per key.
_RELEASE = """
DELETE FROM rate_log WHERE ctid IN (
    SELECT ctid FROM (
        SELECT ctid, row_number() OVER (PARTITION BY key) AS n FROM rate_log
        WHERE key = ANY(%(keys)s::text[]) AND ts = %(at)s
    ) AS s WHERE n <= %(cost)s
)
"""
_LOCK_KEYS = (
    "SELECT pg_advisory_xact_lock(h) FROM "
    "(SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) AS k ORDER BY 1) AS s"
)

# MIGRATIONS[n] upgrades schema version n to n + 1. Append, never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE verifications (
            id TEXT COLLATE "C" PRIMARY KEY,
            to_number TEXT COLLATE "C" NOT NULL,
            channel TEXT NOT NULL,
            status TEXT NOT NULL,
            key_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            resend_available_at DOUBLE PRECISION NOT NULL,
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
        'CREATE TABLE rate_log (key TEXT COLLATE "C" NOT NULL, ts DOUBLE PRECISION NOT NULL)',
        "CREATE INDEX rate_log_key_ts ON rate_log (key, ts)",
        "CREATE INDEX rate_log_ts ON rate_log (ts)",
        """CREATE TABLE flags (
            key TEXT COLLATE "C" PRIMARY KEY,
            value TEXT NOT NULL,
            until DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX flags_until ON flags (until)",
        """CREATE TABLE events (
            id TEXT COLLATE "C" PRIMARY KEY,
            type TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            verification_id TEXT,
            number_masked TEXT,
            number_hash TEXT,
            country TEXT,
            channel TEXT,
            client_ip TEXT,
            reason TEXT,
            rule TEXT,
            provider_code INTEGER,
            details JSONB NOT NULL
        )""",
        "CREATE INDEX events_type ON events (type)",
        "CREATE INDEX events_number_hash ON events (number_hash)",
        "CREATE INDEX events_client_ip ON events (client_ip)",
        "CREATE INDEX events_country ON events (country)",
        "CREATE INDEX events_ts ON events (ts)",
        """CREATE TABLE alerts (
            id TEXT COLLATE "C" PRIMARY KEY,
            rule TEXT NOT NULL,
            subject TEXT NOT NULL,
            status TEXT NOT NULL,
            opened_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            resolved_at DOUBLE PRECISION,
            message TEXT NOT NULL,
            details JSONB NOT NULL
        )""",
        "CREATE INDEX alerts_updated_at ON alerts (updated_at)",
        """CREATE TABLE api_keys (
            id TEXT COLLATE "C" PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL,
            scopes JSONB NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        _HIT_FUNCTION,
    ),
    (
        # Limits and costs are bigint: the fraud counters use limits past 2**31.
        "DROP FUNCTION otpguard_hit(text[], float8[], int[], int, float8, bool)",
        _HIT_FUNCTION.replace("p_limits int[], p_cost int", "p_limits bigint[], p_cost bigint"),
    ),
    (
        # Admission buckets (admission.py) and the API key that started a verification.
        """CREATE TABLE buckets (
            key TEXT COLLATE "C" PRIMARY KEY,
            level DOUBLE PRECISION NOT NULL,
            earned DOUBLE PRECISION NOT NULL,
            t DOUBLE PRECISION NOT NULL,
            forget_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX buckets_forget_at ON buckets (forget_at)",
        "ALTER TABLE verifications ADD COLUMN owner TEXT",
    ),
    (
        # Rules with record_only and skip_if_seen, and the locks and bucket reads of
        # admit. otpguard_hit stays for instances of the previous release during a
        # rolling upgrade (a later step may drop it).
        _JUDGE_FUNCTION,
    ),
    (
        # Repeated refusals counted per minute and kind (refusals.py), not stored.
        """CREATE TABLE refusal_tallies (
            minute BIGINT NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            count BIGINT NOT NULL,
            last_ts DOUBLE PRECISION NOT NULL,
            example JSONB NOT NULL,
            PRIMARY KEY (minute, key)
        )""",
        # Per-verification storage (docs/deploying-at-scale.md, "Sizing"): a type or a
        # country matches a large share of all events, so these indexes were never the
        # cheaper path (event lists walk the id order, the stats a ts range) and cost
        # about a tenth of every event's bytes.
        "DROP INDEX events_type",
        "DROP INDEX events_country",
    ),
    (
        # "purpose": what a code is for (purpose.py), kept for resends and answers.
        # NULL in older rows reads as a login code, as their tags are.
        "ALTER TABLE verifications ADD COLUMN purpose TEXT",
        "ALTER TABLE verifications ADD COLUMN amount TEXT",
        "ALTER TABLE verifications ADD COLUMN currency TEXT",
        "ALTER TABLE verifications ADD COLUMN payee TEXT",
    ),
    # webhooks: the outbox and delivery log (stores/webhooks_pg.py).
    WEBHOOKS_MIGRATION,
    # Events counted per minute and kind (counters.py), what stats and alerts read.
    (counts_sql.CREATE.format(int="BIGINT", collate=' COLLATE "C"', options=""),),
)


# record_attempt in one statement. The conditional UPDATE decides; when it changed
# nothing, the row is read FOR UPDATE (which waits for and returns the newest
# committed version) to say why: not pending, or pending at the cap.
RECORD_ATTEMPT = f"""
WITH upd AS (
    UPDATE verifications SET
        status = CASE WHEN expires_at <= %(now)s THEN 'expired' ELSE status END,
        attempts = CASE WHEN expires_at <= %(now)s THEN attempts ELSE attempts + 1 END,
        updated_at = %(now)s
    WHERE id = %(id)s AND status = 'pending'
        AND (expires_at <= %(now)s OR attempts < %(max)s)
    RETURNING {V_COLUMNS}
), cur AS (
    SELECT {V_COLUMNS} FROM verifications
    WHERE id = %(id)s AND NOT EXISTS (SELECT 1 FROM upd)
    FOR UPDATE
)
SELECT *, true FROM upd
UNION ALL
SELECT *, false FROM cur
"""  # noqa: S608 - constant


def _split_url(url: str) -> tuple[str, dict[str, float]]:
    """The libpq URL without otpguard's pool parameters, and those parameters."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigError(f"OTPGUARD_STORE: not a postgresql:// URL (scheme {parts.scheme!r})")
    options: dict[str, float] = dict(POOL_DEFAULTS)
    kept = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in POOL_DEFAULTS:
            try:
                options[name] = float(value)
            except ValueError:
                raise ConfigError(f"OTPGUARD_STORE: {name} must be a number") from None
        else:
            kept.append((name, value))
    if not 1 <= options["pool_min_size"] <= options["pool_max_size"]:
        raise ConfigError("OTPGUARD_STORE: need 1 <= pool_min_size <= pool_max_size")
    if options["pool_timeout"] <= 0:
        raise ConfigError("OTPGUARD_STORE: pool_timeout must be positive")
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept), ""))
    try:  # libpq's own parser: names an unknown option now, not at the first connection
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:  # 'invalid URI query parameter: "foo"'
        raise ConfigError(
            f"OTPGUARD_STORE: {str(exc).strip()} (libpq options and otpguard's "
            f"{', '.join(POOL_DEFAULTS)})"
        ) from None
    return conninfo, options


def _judge_params(
    rules: Sequence[RateRule],
    buckets: Sequence[Bucket],
    now: float,
    cost: int,
    *,
    lock: bool,
    record: bool,
) -> tuple[Any, ...]:
    """The arguments of otpguard_judge."""
    return (
        [r.key for r in rules],
        [now - r.window for r in rules],
        [r.limit for r in rules],
        [not r.record_only and r.limit < RECORD_ONLY for r in rules],
        [r.skip_if_seen for r in rules],
        cost,
        now,
        lock,
        record,
        [b.key for b in buckets],
    )


def _rule_refusal(rules: Sequence[RateRule], row: Sequence[Any], now: float) -> RateDecision | None:
    refused, counts, oldest = int(row[0]), row[1], row[2]
    if not refused:
        return None
    r = rules[refused - 1]
    # Room appears once the (n + cost - limit)-th oldest entry leaves; when cost >
    # limit it never fits and a full window is the bound.
    retry_after = float(r.window) if oldest is None else oldest + r.window - now
    return RateDecision(False, r.name, retry_after, int(counts[-1]), key=r.key)


def _bucket_states(
    buckets: Sequence[Bucket], row: Sequence[Any], now: float
) -> list[admission.Level]:
    if not buckets:
        return []
    levels, earned, ts = row[4], row[5], row[6]
    out = []
    for i, b in enumerate(buckets):
        if levels[i] is None:  # no row yet
            out.append(admission.Level())
        else:
            out.append(admission.decayed(levels[i], earned[i], ts[i], now, b.tau))
    return out


def _write_params(
    keys: Sequence[str], buckets: Sequence[Bucket], states: Sequence[admission.Level], now: float
) -> dict[str, Any]:
    # A key listed twice would make ON CONFLICT touch a row twice: the last one wins
    # (both carry the same state, computed from the same read).
    rows = {b.key: (b, st) for b, st in zip(buckets, states, strict=True)}
    return {
        "now": now,
        "keys": list(keys),
        "b_keys": list(rows),
        "b_level": [st.level for _, st in rows.values()],
        "b_earned": [st.earned for _, st in rows.values()],
        "b_t": [now] * len(rows),
        "b_forget": [now + admission.FORGET_AFTER_TAUS * b.tau for b, _ in rows.values()],
    }


def _unreachable(exc: psycopg.Error) -> bool:
    """Whether ``exc`` says the server is not there (not that a statement failed)."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, psycopg_pool.PoolClosed):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _UNREACHABLE_STATES


class PostgresStore(PostgresWebhooks, PostgresLists, Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self._conninfo, self._options = _split_url(url)
        self._pool: psycopg_pool.AsyncConnectionPool[Conn] | None = None
        self._check_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None  # set while the server is down

    def __repr__(self) -> str:  # never the password
        return f"PostgresStore({urlsplit(self.url).hostname!r})"

    # -- plumbing -----------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """The one place psycopg and pool errors become StorageError; no SQL, no values."""
        try:
            yield
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and not isinstance(
                exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed
            ):
                self._check_idle_connections()
            if _unreachable(exc):
                self._mark_down()
            reason = exc.sqlstate or type(exc).__name__
            raise StorageError(f"postgres store: {op} failed ({reason})") from exc
        except OSError as exc:
            raise StorageError(f"postgres store: {op} failed ({type(exc).__name__})") from exc

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

    @contextlib.asynccontextmanager
    async def _conn(self, op: str) -> AsyncIterator[Conn]:
        with self._errors(op):
            pool = self._pool
            if pool is None:
                raise StorageError(f"postgres store: {op} failed (store is not open)")
            if self._probe_task is not None:
                raise StorageError(f"postgres store: {op} failed (server unreachable)")
            async with pool.connection() as conn:
                yield conn

    async def _one(self, op: str, query: str, params: Any = None) -> tuple[Any, ...] | None:
        async with self._conn(op) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def _all(self, op: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        async with self._conn(op) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def _rowcount(self, op: str, query: str, params: Any = None) -> int:
        async with self._conn(op) as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount

    async def open(self) -> None:
        if self._pool is not None:  # open() is idempotent
            return
        pool: psycopg_pool.AsyncConnectionPool[Conn] = psycopg_pool.AsyncConnectionPool(
            self._conninfo,
            min_size=int(self._options["pool_min_size"]),
            max_size=int(self._options["pool_max_size"]),
            timeout=self._options["pool_timeout"],
            kwargs={"autocommit": True},
            name="otpguard",
            open=False,
        )
        try:
            with self._errors("open"):
                await pool.open(wait=True, timeout=self._options["pool_timeout"])
                async with pool.connection() as conn:
                    await self._migrate(conn)
        except StorageError as exc:
            await pool.close()
            if isinstance(exc.__cause__, psycopg_pool.PoolTimeout):
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

    async def health(self) -> None:
        await self._one("health", "SELECT 1")

    # -- verifications ------------------------------------------------------------

    async def create_verification(self, v: Verification) -> None:
        await self._rowcount(
            "create_verification",
            f"INSERT INTO verifications ({V_COLUMNS}) VALUES "  # noqa: S608 - constant
            f"({', '.join(['%s'] * V_PLACEHOLDERS)})",
            verification_values(v),
        )

    async def get_verification(self, verification_id: str) -> Verification | None:
        row = await self._one("get_verification", f"{SELECT_V} WHERE id = %s", (verification_id,))
        return None if row is None else verification_from_row(row)

    async def find_pending(self, to: str, now: float) -> Verification | None:
        row = await self._one(
            "find_pending",
            f"{SELECT_V} WHERE to_number = %s AND status = 'pending' AND expires_at > %s "
            "ORDER BY created_at DESC, id DESC LIMIT 1",
            (to, now),
        )
        return None if row is None else verification_from_row(row)

    async def list_pending(
        self, to: str, now: float, *, owner: str | None, limit: int
    ) -> list[Verification]:
        rows = await self._all(
            "list_pending",
            f"{SELECT_V} WHERE to_number = %s AND status = 'pending' AND expires_at > %s "
            "AND (%s::text IS NULL OR owner = %s OR owner IS NULL) "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            (to, now, owner, owner, max(0, limit)),
        )
        return [verification_from_row(row) for row in rows]

    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        row = await self._one(
            "record_attempt",
            RECORD_ATTEMPT,
            {"id": verification_id, "now": now, "max": max_attempts},
        )
        if row is None:
            return None
        v, changed = verification_from_row(row), bool(row[-1])
        if changed:
            outcome = (
                AttemptOutcome.EXPIRED if v.status is Status.EXPIRED else AttemptOutcome.COUNTED
            )
            return AttemptTicket(outcome, v)
        if v.status is not Status.PENDING:
            return AttemptTicket(AttemptOutcome.NOT_PENDING, v)
        # Pending, unexpired (else the UPDATE had marked it expired), at the cap.
        return AttemptTicket(AttemptOutcome.LOCKED, v)

    async def approve(self, verification_id: str, now: float, *, code_hash: str) -> bool:
        n = await self._rowcount(
            "approve",
            "UPDATE verifications SET status = 'approved', updated_at = %s "
            "WHERE id = %s AND status = 'pending' AND expires_at > %s AND code_hash = %s",
            (now, verification_id, now, code_hash),
        )
        return n == 1

    async def lock_if_exhausted(self, verification_id: str, max_attempts: int, now: float) -> bool:
        n = await self._rowcount(
            "lock_if_exhausted",
            "UPDATE verifications SET status = 'max_attempts_reached', updated_at = %s "
            "WHERE id = %s AND status = 'pending' AND attempts >= %s",
            (now, verification_id, max_attempts),
        )
        return n == 1

    async def replace_code(
        self,
        verification_id: str,
        key_id: str,
        code_hash: str,
        now: float,
        expires_at: float,
        resend_available_at: float,
    ) -> Verification | None:
        row = await self._one(
            "replace_code",
            "UPDATE verifications SET key_id = %s, code_hash = %s, expires_at = %s, "  # noqa: S608
            "resend_available_at = %s, updated_at = %s, sends = sends + 1 "
            "WHERE id = %s AND status = 'pending' AND expires_at > %s "
            f"AND resend_available_at <= %s RETURNING {V_COLUMNS}",
            (key_id, code_hash, expires_at, resend_available_at, now,
             verification_id, now, now),
        )  # fmt: skip
        return None if row is None else verification_from_row(row)

    async def transition(
        self, verification_id: str, from_statuses: Sequence[Status], to: Status, now: float
    ) -> Verification | None:
        allowed = [Status(s).value for s in from_statuses]
        row = await self._one(
            "transition",
            "UPDATE verifications SET status = %s, updated_at = %s "  # noqa: S608 - constant
            f"WHERE id = %s AND status = ANY(%s) RETURNING {V_COLUMNS}",
            (Status(to).value, now, verification_id, allowed),
        )
        return None if row is None else verification_from_row(row)

    # -- rate windows ---------------------------------------------------------------

    async def hit(
        self, rules: Sequence[RateRule], now: float, cost: int = 1, record: bool = True
    ) -> RateDecision:
        if cost < 0:
            raise ValueError("cost must be >= 0")
        if not rules:
            return RateDecision(allowed=True)
        rules = tuple(rules)
        row = await self._one(
            "hit", _JUDGE_CALL, _judge_params(rules, (), now, cost, lock=record, record=record)
        )
        assert row is not None
        refusal = _rule_refusal(rules, row, now)
        if refusal is not None:
            return refusal
        return allowed_decision(rules, [int(n) for n in row[1]], cost if record else 0)

    async def release(self, keys: Sequence[str], at: float, cost: int = 1) -> None:
        keys = list(dict.fromkeys(keys))
        if not keys or cost <= 0:
            return
        async with self._conn("release") as conn, conn.transaction():
            await conn.execute(_LOCK_KEYS, (keys,))
            await conn.execute(_RELEASE, {"keys": keys, "at": at, "cost": cost})

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
        async with self._conn("admit") as conn, conn.transaction():
            cur = await conn.execute(
                _JUDGE_CALL, _judge_params(rules, buckets, now, 1, lock=True, record=False)
            )
            row = await cur.fetchone()
            assert row is not None
            refusal = _rule_refusal(rules, row, now)
            if refusal is not None:
                return refusal
            states = _bucket_states(buckets, row, now)
            if not force:
                refusal = admission.judge(buckets, states, pressure)
                if refusal is not None:
                    return refusal
            skipped = row[3]
            keys = list(dict.fromkeys(r.key for r, skip in zip(rules, skipped, strict=True)
                                      if not skip))  # fmt: skip
            after = [admission.after_send(st, 1) for st in states]
            await conn.execute(_WRITE_ADMISSION, _write_params(keys, buckets, after, now))
        return allowed_decision(rules, [int(n) for n in row[1]], 1)

    async def credit(self, buckets: Sequence[Bucket], refund: int, now: float) -> None:
        buckets = tuple(buckets)
        if not buckets:
            return
        async with self._conn("credit") as conn, conn.transaction():
            cur = await conn.execute(
                _JUDGE_CALL, _judge_params((), buckets, now, 0, lock=True, record=False)
            )
            row = await cur.fetchone()
            assert row is not None
            after = [
                admission.after_approval(st, refund) for st in _bucket_states(buckets, row, now)
            ]
            await conn.execute(_WRITE_ADMISSION, _write_params([], buckets, after, now))

    async def count(self, key: str, window: int, now: float) -> int:
        row = await self._one(
            "count", "SELECT count(*) FROM rate_log WHERE key = %s AND ts > %s", (key, now - window)
        )
        return int(row[0]) if row else 0

    async def counts(self, queries: Sequence[tuple[str, int]], now: float) -> list[int]:
        if not queries:
            return []
        sub = "(SELECT count(*) FROM rate_log WHERE key = %s AND ts > %s)"
        sql = "SELECT " + ", ".join([sub] * len(queries))
        params = [p for key, window in queries for p in (key, now - window)]
        row = await self._one("counts", sql, params)
        assert row is not None
        return [int(n) for n in row]

    # -- flags ----------------------------------------------------------------------

    async def set_flag(self, key: str, value: str, until: float) -> None:
        await self._rowcount(
            "set_flag",
            "INSERT INTO flags (key, value, until) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, until = EXCLUDED.until",
            (key, value, until),
        )

    async def get_flag(self, key: str, now: float) -> str | None:
        row = await self._one(
            "get_flag", "SELECT value FROM flags WHERE key = %s AND until > %s", (key, now)
        )
        return None if row is None else str(row[0])

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        if not keys:
            return {}
        rows = await self._all(
            "get_flags",
            "SELECT key, value FROM flags WHERE key = ANY(%s) AND until > %s",
            (list(keys), now),
        )
        return {str(k): str(v) for k, v in rows}

    # -- events ---------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event]) -> None:
        rows = [
            (e.id, e.type, e.ts, e.verification_id, e.number_masked, e.number_hash, e.country,
             e.channel, e.client_ip, e.reason, e.rule, e.provider_code, Jsonb(e.details))
            for e in events
        ]  # fmt: skip
        if not rows:
            return
        query = (
            f"INSERT INTO events ({', '.join(E_FIELDS)}) "  # noqa: S608 - constant
            f"VALUES ({', '.join(['%s'] * len(E_FIELDS))})"
        )
        counts = counts_sql.pg_arrays(counters.of_events(events))
        async with self._conn("add_events") as conn:
            if len(rows) == 1:  # the usual case: one statement, one round trip
                await conn.execute(counts_sql.pg_with_bump(query), [*rows[0], *counts])
                return
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(query, rows)
                await cur.execute(counts_sql.PG_BUMP, counts)

    async def list_events(self, query: EventQuery) -> list[Event]:
        where, params = event_conditions(query, "%s")
        if query.types:
            where.append("type = ANY(%s)")
            params.append(list(query.types))
        text = f"SELECT {', '.join(E_FIELDS)} FROM events"  # noqa: S608 - fixed columns
        if where:
            text += " WHERE " + " AND ".join(where)
        text += " ORDER BY id DESC LIMIT %s"
        params.append(max(0, query.limit))
        rows = await self._all("list_events", text, params)
        return [Event(**dict(zip(E_FIELDS, row, strict=True))) for row in rows]

    async def tally_refusal(self, minute: int, key: str, example: Event) -> int:
        repeat = counts_sql.pg_arrays(counters.increments([(minute, example)]))
        row = await self._one(
            "tally_refusal",
            counts_sql.PG_TALLY,
            (minute, key, example.ts, Jsonb(example.to_dict()), *repeat),
        )
        assert row is not None  # an upsert with RETURNING always returns its row
        return int(row[0])

    async def list_refusal_tallies(self, since: float, until: float) -> list[RefusalTally]:
        rows = await self._all(
            "list_refusal_tallies",
            "SELECT minute, key, count, last_ts, example FROM refusal_tallies "
            "WHERE minute > %s AND minute < %s",
            (since - 60, until),
        )
        return [tally_from_row(row) for row in rows]

    async def list_event_counts(
        self, since: float, until: float, families: Sequence[str]
    ) -> list[EventCount]:
        counts_sql.check_families(families)
        query = counts_sql.sql(counts_sql.LIST, "%s")
        out: list[EventCount] = []
        for family in families:
            params = counts_sql.range_params(since, until, family)
            out += counts_sql.rows_to_counts(await self._all("list_event_counts", query, params))
        return out

    async def top_event_counts(
        self, family: str, since: float, until: float, limit: int
    ) -> list[tuple[str, int]]:
        counts_sql.check_families([family])
        params = [*counts_sql.range_params(since, until, family), max(0, limit)]
        rows = await self._all("top_event_counts", counts_sql.sql(counts_sql.TOP, "%s"), params)
        return [(str(k), int(n)) for k, n in rows]

    # -- alerts ---------------------------------------------------------------------

    async def put_alert(self, alert: Alert) -> None:
        await self._rowcount(
            "put_alert",
            f"INSERT INTO alerts ({A_COLUMNS}) "  # noqa: S608 - constant
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "rule = EXCLUDED.rule, subject = EXCLUDED.subject, status = EXCLUDED.status, "
            "opened_at = EXCLUDED.opened_at, updated_at = EXCLUDED.updated_at, "
            "resolved_at = EXCLUDED.resolved_at, message = EXCLUDED.message, "
            "details = EXCLUDED.details",
            (alert.id, alert.rule, alert.subject, alert.status, alert.opened_at,
             alert.updated_at, alert.resolved_at, alert.message, Jsonb(alert.details)),
        )  # fmt: skip

    async def list_alerts(
        self, since: float | None = None, status: str | None = None
    ) -> list[Alert]:
        rows = await self._all(
            "list_alerts",
            f"SELECT {A_COLUMNS} FROM alerts "  # noqa: S608 - constant
            "WHERE (%(since)s::float8 IS NULL OR updated_at >= %(since)s) "
            "AND (%(status)s::text IS NULL OR status = %(status)s) "
            "ORDER BY updated_at DESC, id DESC",
            {"since": since, "status": status},
        )
        return [alert_from_row(row) for row in rows]

    # -- API keys -------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey) -> None:
        await self._rowcount(
            "create_api_key",
            f"INSERT INTO api_keys ({K_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",  # noqa: S608
            (key.id, key.name, key.key_hash, Jsonb(list(key.scopes)), key.created_at,
             key.revoked_at),
        )  # fmt: skip

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._one(
            "get_api_key",
            f"SELECT {K_COLUMNS} FROM api_keys WHERE id = %s",  # noqa: S608 - constant
            (key_id,),
        )
        return None if row is None else api_key_from_row(row)

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._all(
            "list_api_keys",
            f"SELECT {K_COLUMNS} FROM api_keys ORDER BY created_at, id",  # noqa: S608
        )
        return [api_key_from_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        n = await self._rowcount(
            "revoke_api_key",
            "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
            (now, key_id),
        )
        return n == 1

    # -- maintenance ----------------------------------------------------------------

    async def purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        jobs = (
            ("verifications", "expires_at < %s", now - verification_grace),
            ("rate_log", "ts < %s", now - rate_horizon),
            ("events", "ts < %s", now - event_horizon),
            ("refusal_tallies", "minute < %s", now - event_horizon - 60),
            ("flags", "until <= %s", now),
            ("buckets", "forget_at < %s", now),
            *(("event_counts", counts_sql.sql(c, "%s"), now - event_horizon - 60)
              for c in counts_sql.PURGE_CONDITIONS),
        )  # fmt: skip
        total = 0
        for table, condition, bound in jobs:
            # One short DELETE per batch (rows picked by ctid); other work interleaves.
            # Instances purging at the same time just find fewer rows.
            query = (
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608 - constant names
                f"SELECT ctid FROM {table} WHERE {condition} LIMIT %s))"
            )
            while True:
                removed = await self._rowcount("purge", query, (bound, PURGE_BATCH))
                if table != "event_counts":  # sums of events, not rows of data
                    total += removed
                if removed < PURGE_BATCH:
                    break
        return total

    async def dump(self) -> str:
        lines: list[str] = []
        async with self._conn("dump") as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' "
                "ORDER BY table_name"
            )
            tables = [str(r[0]) for r in await cur.fetchall()]
            for table in tables:
                cur = await conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                names = [d.name for d in cur.description or ()]
                lines.append(f"== {table}: " + "\t".join(names))
                for row in await cur.fetchall():
                    lines.append(
                        "\t".join(
                            json.dumps(v) if isinstance(v, dict | list) else str(v) for v in row
                        )
                    )
        return "\n".join(lines) + "\n"
