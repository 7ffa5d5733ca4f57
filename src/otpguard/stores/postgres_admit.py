"""PostgreSQL's ``Store.admit`` in one statement, one round trip: the server-side
function ``otpguard_admit`` (a migration step of ``postgres_sql``) and the statement
around it, which also writes an admitted start's verification, events and counts.

These statements use psycopg's named placeholders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from .. import admission, counters
from ..events import Event
from ..models import Bucket, RateDecision, RateRule
from . import counts_sql, rate_log
from .base import Started
from .sql import E_FIELDS, V_COLUMNS, verification_values

# Store.admit in one call (one round trip): otpguard_judge's locks and rules, then the
# buckets (admission.py's arithmetic: decayed, fits, retry_after, as redis_lua_rates'
# Lua mirrors it), then the writes. Per bucket j: key, base, tau, share, forget_at.
# Returns the judge's refused/counts/oldest, and a bucket's refusal: its index (0:
# none), its level, retry_after and whether only the soft line (p_pressure) refused.
ADMIT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION otpguard_admit(
    p_keys text[], p_starts float8[], p_limits bigint[], p_enforced bool[], p_seen text[],
    p_now float8, p_buckets text[], p_base float8[], p_tau float8[], p_share float8[],
    p_forget float8[], p_pressure float8, p_force bool
) RETURNS TABLE (
    refused int, counts bigint[], oldest float8, bucket int, b_level float8, b_wait float8,
    challenge bool
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    j int;
    r record;
    lv float8;
    ea float8;
    room float8;
    hard bool;
    levels float8[] := '{{}}';
    earneds float8[] := '{{}}';
    recorded text[];
BEGIN
    SELECT * INTO r FROM otpguard_judge(p_keys, p_starts, p_limits, p_enforced, p_seen,
        1, p_now, true, false, p_buckets);
    refused := r.refused; counts := r.counts; oldest := r.oldest;
    bucket := 0; challenge := false;
    IF refused > 0 THEN RETURN NEXT; RETURN; END IF;
    FOR j IN 1 .. coalesce(array_length(p_buckets, 1), 0) LOOP
        lv := coalesce(r.b_level[j], 0.0); ea := coalesce(r.b_earned[j], 0.0);
        IF r.b_level[j] IS NOT NULL AND p_now > r.b_t[j] AND p_tau[j] > 0 THEN
            lv := lv * exp(-(p_now - r.b_t[j]) / p_tau[j]);
            ea := ea * exp(-(p_now - r.b_t[j]) / p_tau[j]);
        END IF;
        IF NOT p_force THEN
            room := p_base[j] + p_share[j] * ea;  -- the allowance
            hard := NOT (lv + 1 <= room + 1e-9);
            IF hard OR (p_pressure IS NOT NULL AND NOT (lv + 1 <= (1.0 - p_pressure) * room + 1e-9))
            THEN
                bucket := j; b_level := lv; challenge := NOT hard;
                room := p_base[j] + p_share[j] * ea - 1;
                IF room <= 0 THEN room := p_base[j] - 1; END IF;
                IF lv <= 0 THEN b_wait := 1.0;
                ELSIF room <= 0 THEN b_wait := p_tau[j];
                ELSIF lv <= room THEN b_wait := 1.0;
                ELSE b_wait := greatest(1.0, p_tau[j] * ln(lv / room));
                END IF;
                RETURN NEXT; RETURN;
            END IF;
        END IF;
        levels := levels || (lv + 1); earneds := earneds || ea;
    END LOOP;
    -- One event is one entry per key, even when several rules share a key.
    recorded := ARRAY(SELECT p_keys[i] FROM generate_subscripts(p_keys, 1) AS i
                      WHERE NOT r.skipped[i]);
    {rate_log.pg_record("recorded", "p_now", "1")};
    -- A key listed twice: the last one wins (both carry the same state).
    INSERT INTO buckets (key, level, earned, t, forget_at)
    SELECT DISTINCT ON (u.k) u.k, u.l, u.e, p_now, u.f
    FROM unnest(p_buckets, levels, earneds, p_forget) WITH ORDINALITY AS u(k, l, e, f, o)
    ORDER BY u.k, u.o DESC
    ON CONFLICT (key) DO UPDATE SET level = EXCLUDED.level, earned = EXCLUDED.earned,
        t = EXCLUDED.t, forget_at = EXCLUDED.forget_at;
    RETURN NEXT;
END
$fn$
"""  # noqa: S608 - constant SQL built from rate_log's texts

# -- Store.admit in one statement: otpguard_admit, and a start's rows when it admits ----

ADMIT = (
    "SELECT * FROM otpguard_admit(%(keys)s::text[], %(starts)s::float8[], "
    "%(limits)s::int8[], %(enforced)s::bool[], %(seen)s::text[], %(now)s::float8, "
    "%(b_keys)s::text[], %(base)s::float8[], %(tau)s::float8[], %(share)s::float8[], "
    "%(forget)s::float8[], %(pressure)s::float8, %(force)s::bool)"
)
_OK = "(SELECT refused = 0 AND bucket = 0 FROM a)"
#: ADMIT with an admitted start's verification (``%(v)s``: a JSON object of its
#: columns), events (``%(e)s``: a JSON array of rows) and their count arrays
#: (``%(c0)s`` .. ``%(c3)s``, ``counts_sql.pg_arrays``), written only when it admits;
#: none of it, and no row, when one of the start's ``unless_flags`` (``%(unless)s``)
#: is set (the one-time filter runs before otpguard_admit would).
_UNSET = (
    " WHERE NOT EXISTS (SELECT 1 FROM flags WHERE key = ANY(%(unless)s::text[])"
    " AND until > %(now)s::float8)"
)
ADMIT_START = (
    f"WITH a AS MATERIALIZED ({ADMIT}{_UNSET}), "  # noqa: S608 - constant names; values are bound
    f"v AS (INSERT INTO verifications ({V_COLUMNS}, plan) SELECT {V_COLUMNS}, plan "
    f"FROM json_populate_record(NULL::verifications, %(v)s::json) WHERE {_OK}), "
    f"e AS (INSERT INTO events ({', '.join(E_FIELDS)}) SELECT {', '.join(E_FIELDS)} "
    f"FROM jsonb_populate_recordset(NULL::events, %(e)s::jsonb) WHERE {_OK}), "
    "c AS ("
    + counts_sql.PG_BUMP.replace("%s", "%({})s")
    .format("c0", "c1", "c2", "c3")
    .replace(" ON CONFLICT", f" WHERE {_OK} ON CONFLICT")
    + ") SELECT * FROM a"
)


def admit_params(
    rules: Sequence[RateRule],
    buckets: Sequence[Bucket],
    now: float,
    pressure: float | None,
    force: bool,
) -> dict[str, Any]:
    """The arguments of otpguard_admit (``ADMIT``)."""
    return {
        "keys": [r.key for r in rules],
        "starts": [now - r.window for r in rules],
        "limits": [r.limit for r in rules],
        "enforced": [not r.record_only for r in rules],
        "seen": [r.skip_if_seen for r in rules],
        "now": now,
        "b_keys": [b.key for b in buckets],
        "base": [float(b.base) for b in buckets],
        "tau": [float(b.tau) for b in buckets],
        "share": [float(b.share) for b in buckets],
        "forget": [now + admission.FORGET_AFTER_TAUS * b.tau for b in buckets],
        "pressure": pressure,
        "force": force,
    }


def bucket_refusal(buckets: Sequence[Bucket], row: Sequence[Any]) -> RateDecision | None:
    """The bucket's refusal an ``otpguard_admit`` row names (after the rules'), or None."""
    if not row[3]:
        return None
    b = buckets[int(row[3]) - 1]
    return RateDecision(
        False, b.name, float(row[5]), int(row[4]), challenge=bool(row[6]), key=b.key
    )


def start_params(start: Started, event_row: Callable[[Event], tuple[Any, ...]]) -> dict[str, Any]:
    """``ADMIT_START``'s rows of ``start``: the verification, events and counts;
    ``event_row`` is the store's row of an event (its details passed as JSON here)."""
    columns = V_COLUMNS.split(", ")
    events = [
        dict(zip(E_FIELDS, (*event_row(e)[:-1], e.details), strict=True)) for e in start.events
    ]
    bumps = counts_sql.pg_arrays(counters.of_events(start.events))
    return {
        "unless": list(start.unless_flags),
        "v": Jsonb(
            {
                **dict(zip(columns, verification_values(start.verification), strict=True)),
                "plan": None if start.plan is None else start.plan.to_json(),
            }
        ),
        "e": Jsonb(events),
        **{f"c{i}": col for i, col in enumerate(bumps)},
    }
