"""PostgreSQL's own statements: the server-side functions of the rate windows, the
one-statement ``record_attempt``, and the migrations (the shared tables are
``sql_schema``'s).

* ``hit`` is one call of ``otpguard_judge``: it takes ``pg_advisory_xact_lock(hashtext(key))``
  for each key in hash order (no deadlocks), then counts and inserts under the locks,
  all in one transaction. ``skip_if_seen`` keys are counted inside it, under their locks;
* ``admit`` is one statement, one round trip: ``otpguard_admit`` calls
  ``otpguard_judge`` (which locks every rate and bucket key in hash order and judges
  the rules), then judges and raises the buckets with ``otpguard.admission``'s
  arithmetic (mirrored in PL/pgSQL, as the Redis Lua mirrors it) and writes the rate
  entries and the buckets; for a start, more CTEs of the same statement insert the
  verification, its events and their counts when it admitted (``postgres_admit.py``);
* ``credit`` is one transaction: ``otpguard_judge`` locks and reads the buckets, the
  arithmetic runs in Python (the same code as SQLite's), and ``WRITE_BUCKETS``
  writes them.

A window is counted from ``rate_log.cum`` in two index probes, and every writer keeps
that running count consecutive under the key's lock (``rate_log.py``).

And the store URL's own parameters (``split_url``). These statements use psycopg's
``%s`` placeholders (the shared ones use ``?``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg.conninfo

from .. import admission
from ..errors import ConfigError
from ..models import Bucket, RateDecision, RateRule
from . import postgres_released as rel
from . import rate_log
from . import sql_schema as schema
from .base import allowed_decision, refusal
from .postgres_admit import ADMIT_FUNCTION
from .postgres_check import CHECK_FUNCTION
from .postgres_open import OPEN_FUNCTION
from .postgres_settle import SETTLE_FUNCTION
from .sql import SELECT_V, Cursor
from .sql_store import ATTEMPT_UPDATE

# Schema 11: each function that counts a window, from rate_log.cum in two index probes
# (rate_log.py) rather than count(*) over its entries, and that keeps cum consecutive
# when it records. Schema 16: skip_if_seen as an index probe. (The released texts are
# postgres_released.py's.)

# The first release's hit, kept for instances of older releases: otpguard_judge with
# every rule enforced.
HIT_FUNCTION = """
CREATE OR REPLACE FUNCTION otpguard_hit(
    p_keys text[], p_starts float8[], p_limits bigint[], p_cost bigint, p_now float8,
    p_record bool
) RETURNS TABLE (refused int, counts bigint[], oldest float8)
LANGUAGE sql VOLATILE AS $fn$
    SELECT j.refused, j.counts, j.oldest FROM otpguard_judge(p_keys, p_starts, p_limits,
        array_fill(true, ARRAY[coalesce(array_length(p_keys, 1), 0)]),
        array_fill(NULL::text, ARRAY[coalesce(array_length(p_keys, 1), 0)]),
        p_cost, p_now, p_record, p_record, '{}') AS j
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
_NTH = rate_log.NTH_TS.replace("{key}", "p_keys[i]").replace("{start}", "p_starts[i]")
_NTH_BACK = rate_log.NTH_TS_FROM_END.replace("{key}", "p_keys[i]").replace("{start}", "p_starts[i]")
JUDGE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION otpguard_judge(
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
    recorded text[];
BEGIN
    -- Each statement of a VOLATILE function takes a fresh snapshot, so the reads
    -- below see everything committed by whoever held these locks before us.
    IF p_lock THEN
        PERFORM pg_advisory_xact_lock(h)
        FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(p_keys || p_seen || p_buckets) AS k
              WHERE k IS NOT NULL ORDER BY 1) AS s;
    END IF;
    counts := '{{}}';
    skipped := '{{}}';
    refused := 0;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        -- Seen: the seen key's newest entry is after the window's start. An index
        -- probe, as the counts are: an EXISTS over (key, ts > start) may be planned
        -- as a scan of rate_log when the key is frequent (schema 11 did that).
        skip := p_seen[i] IS NOT NULL AND coalesce((
            SELECT z.ts FROM rate_log AS z WHERE z.key = p_seen[i]
            ORDER BY z.ts DESC, z.cum DESC LIMIT 1) > p_starts[i], false);
        skipped := skipped || skip;
        n := 0;
        IF p_enforced[i] AND NOT skip THEN
            n := {rate_log.count("p_keys[i]", "p_starts[i]")};
            IF n + p_cost > p_limits[i] THEN
                counts := counts || n;
                refused := i;
                must_leave := n + p_cost - p_limits[i];
                IF must_leave <= n AND must_leave - 1 <= n - must_leave THEN
                    oldest := ({_NTH.format(offset="must_leave - 1")});
                ELSIF must_leave <= n THEN  -- nearer the newest (rate_log.nth_from_start)
                    oldest := ({_NTH_BACK.format(offset="n - must_leave")});
                END IF;
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;
        counts := counts || n;
    END LOOP;
    IF p_record AND p_cost > 0 THEN
        -- One event is one entry per key, even when several rules share a key.
        recorded := ARRAY(SELECT p_keys[j] FROM generate_subscripts(p_keys, 1) AS j
                          WHERE NOT skipped[j]);
        {rate_log.pg_record("recorded", "p_now", "p_cost")};
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
"""  # noqa: S608 - constant SQL built from rate_log's texts

JUDGE_CALL = (
    "SELECT refused, counts, oldest, skipped, b_level, b_earned, b_t FROM otpguard_judge("
    "%s::text[], %s::float8[], %s::int8[], %s::bool[], %s::text[], %s::int8, %s::float8, "
    "%s::bool, %s::bool, %s::text[])"
)

# The rate entries of an approval's counters (and of SQLStore.settle's, which this
# store replaces with otpguard_settle), under their keys' advisory locks.
RECORD = rate_log.pg_record("%(keys)s::text[]", "%(now)s::float8", "1")
# The bucket rows of a credit.
WRITE_BUCKETS = """
INSERT INTO buckets (key, level, earned, t, forget_at)
SELECT * FROM unnest(%(b_keys)s::text[], %(b_level)s::float8[], %(b_earned)s::float8[],
    %(b_t)s::float8[], %(b_forget)s::float8[])
ON CONFLICT (key) DO UPDATE SET level = EXCLUDED.level, earned = EXCLUDED.earned,
    t = EXCLUDED.t, forget_at = EXCLUDED.forget_at
"""

# Store.release, after the keys' advisory locks (the ones hit and admit take): up to
# cost entries at exactly ``at`` per key, and the later entries' cum moved down.
RELEASE = rate_log.pg_release("%(keys)s::text[]", "%(at)s::float8", "%(cost)s::int8")
LOCK_KEYS = (
    "SELECT pg_advisory_xact_lock(h) FROM "
    "(SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) AS k ORDER BY 1) AS s"
)

# MIGRATIONS[n] upgrades schema version n to n + 1. Append, never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = schema.render(
    (
        schema.first_step(["CREATE INDEX flags_until ON flags (until)"], [rel.HIT_1]),
        (
            # Limits and costs are bigint: counters may use limits past 2**31.
            "DROP FUNCTION otpguard_hit(text[], float8[], int[], int, float8, bool)",
            rel.HIT_1.replace("p_limits int[], p_cost int", "p_limits bigint[], p_cost bigint"),
        ),
        schema.BUCKETS,
        # Rules with record_only and skip_if_seen, and the locks and bucket reads of
        # admit. otpguard_hit stays for instances of the previous release during a
        # rolling upgrade (a later step may drop it).
        (rel.JUDGE_4,),
        schema.REFUSALS,
        schema.PURPOSE,
        schema.WEBHOOKS,
        schema.COUNTS,
        (rel.SETTLE_9,),  # Store.settle in one round trip
        # Store.admit in one call (otpguard_judge stays: hit and credit use it).
        (rel.ADMIT_10,),
        # Windows counted from a running count per key (rate_log.py): every function
        # that counts or records, replaced; cum is set by every writer from now on.
        (
            *rate_log.migration("ctid"),
            "ALTER TABLE rate_log ALTER COLUMN cum SET NOT NULL",
            rel.JUDGE_11,
            HIT_FUNCTION,
            ADMIT_FUNCTION,
            rel.SETTLE_11,
        ),
        (OPEN_FUNCTION,),  # Store.open_check in one round trip
        schema.SERVICE,  # the verification's /v2 service in its row (no function changes)
        schema.services(lambda name: f"(value::jsonb ->> '{name}')"),  # the service records
        schema.SIGNED_OUT,  # the dashboard's sign-outs
        (JUDGE_FUNCTION,),  # skip_if_seen as an index probe, never a scan
        # A check by id judged in its one call (postgres_check.py): the row keeps its
        # plan; settle locks the reserved keys before the buckets and counters.
        ("ALTER TABLE verifications ADD COLUMN plan jsonb", SETTLE_FUNCTION, CHECK_FUNCTION),
    ),
    schema.POSTGRES,
)

# record_attempt in one statement. The conditional UPDATE decides; when it changed
# nothing, the row is read FOR UPDATE (which waits for and returns the newest
# committed version) to say why: not pending, or pending at the cap.
RECORD_ATTEMPT = (
    f"WITH upd AS ({ATTEMPT_UPDATE.replace('?', '%s')}), "  # noqa: S608 - constant
    f"cur AS ({SELECT_V} WHERE id = %s AND NOT EXISTS (SELECT 1 FROM upd) FOR UPDATE) "
    "SELECT *, true FROM upd UNION ALL SELECT *, false FROM cur"
)


def judge_params(
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
        [not r.record_only for r in rules],
        [r.skip_if_seen for r in rules],
        cost,
        now,
        lock,
        record,
        [b.key for b in buckets],
    )


def rule_refusal(rules: Sequence[RateRule], row: Sequence[Any], now: float) -> RateDecision | None:
    """The refusal an ``otpguard_judge`` row names (the entry that must leave was read
    under the locks), or None."""
    refused, counts, oldest = int(row[0]), row[1], row[2]
    if not refused:
        return None
    return refusal(rules[refused - 1], int(counts[-1]), oldest, now)


async def judged(
    cur: Cursor, rules: Sequence[RateRule], now: float, cost: int, record: bool
) -> RateDecision:
    """``hit`` as one otpguard_judge call on ``cur``."""
    params = judge_params(rules, (), now, cost, lock=record, record=record)
    row = await cur.one(JUDGE_CALL, params)
    assert row is not None
    refused = rule_refusal(rules, row, now)
    if refused is not None:
        return refused
    return allowed_decision(rules, [int(n) for n in row[1]], cost if record else 0)


def bucket_states(
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


def bucket_params(
    buckets: Sequence[Bucket], states: Sequence[admission.Level], now: float
) -> dict[str, Any]:
    """``WRITE_BUCKETS``'s parameters."""
    # A key listed twice would make ON CONFLICT touch a row twice: the last one wins
    # (both carry the same state, computed from the same read).
    rows = {b.key: (b, st) for b, st in zip(buckets, states, strict=True)}
    return {
        "b_keys": list(rows),
        "b_level": [st.level for _, st in rows.values()],
        "b_earned": [st.earned for _, st in rows.values()],
        "b_t": [now] * len(rows),
        "b_forget": [now + admission.FORGET_AFTER_TAUS * b.tau for b, _ in rows.values()],
    }


POOL_DEFAULTS = {"pool_min_size": 2, "pool_max_size": 10, "pool_timeout": 5.0}


def split_url(url: str) -> tuple[str, dict[str, float]]:
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
