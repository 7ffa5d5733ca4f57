"""PostgreSQL's ``Store.settle`` in one call, one round trip: the server-side function
``otpguard_settle`` (a migration step of ``postgres_sql``) and its parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg.types.json import Jsonb

from .. import admission, counters
from ..events import Event
from ..numberlists import KEY_PREFIX as LIST_KEY_PREFIX
from . import counts_sql, rate_log
from .settlement import Settlement
from .sql import E_FIELDS

# Store.settle in one call (settlement.py): 0 when this call did not approve, 1 when
# it settled, 2 when it approved but the bookkeeping failed (rolled back to the block's
# start: the approval stands). Locks the reserved keys, then the bucket and counter keys
# (each in hash order, as hit, release, credit and admit lock theirs; the reserved keys
# first, as otpguard_check holds them already when it settles), as release,
# credit and admit do (rate_log.cum is kept under them); the bucket arithmetic is
# admission.py's (decayed, after_approval); an allow entry is a live numlist: flag whose
# value (numberlists.encode's canonical JSON) says "kind":"allow".
SETTLE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION otpguard_settle(
    p_id text, p_now float8, p_hash text, p_reserved text[], p_events jsonb,
    p_cf text[], p_cm bigint[], p_ck text[], p_cn bigint[], p_listed text[],
    p_trusted text[], p_until float8, p_buckets text[], p_taus float8[],
    p_forget float8[], p_refund float8, p_counters text[]
) RETURNS int
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    i int;
    lv float8;
    er float8;
    lt float8;
BEGIN
    UPDATE verifications SET status = 'approved', updated_at = p_now
    WHERE id = p_id AND status = 'pending' AND expires_at > p_now
        AND (code_hash = p_hash OR left(code_hash, length(p_hash) + 1) = p_hash || ' ');
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    BEGIN
        PERFORM pg_advisory_xact_lock(h)
        FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(p_reserved) AS k ORDER BY 1) AS s;
        PERFORM pg_advisory_xact_lock(h)
        FROM (SELECT DISTINCT hashtext(k) AS h
              FROM unnest(p_buckets || p_counters) AS k ORDER BY 1) AS s;
        {rate_log.pg_release("p_reserved", "p_now", "1")};
        INSERT INTO events (id, type, ts, verification_id, number_masked, number_hash,
            country, channel, client_ip, reason, rule, provider_code, details)
        SELECT id, type, ts, verification_id, number_masked, number_hash, country, channel,
            client_ip, reason, rule, provider_code, details
        FROM jsonb_populate_recordset(NULL::events, p_events);
        INSERT INTO event_counts (family, minute, kind, count)
        SELECT * FROM unnest(p_cf, p_cm, p_ck, p_cn)
        ON CONFLICT (family, minute, kind)
            DO UPDATE SET count = event_counts.count + excluded.count;
        IF EXISTS (SELECT 1 FROM flags WHERE key = ANY(p_listed) AND until > p_now
                   AND strpos(value, '"kind":"allow"') > 0) THEN
            RETURN 1;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM flags WHERE key = ANY(p_trusted) AND until > p_now) THEN
            FOR i IN 1 .. coalesce(array_length(p_buckets, 1), 0) LOOP
                SELECT level, earned, t INTO lv, er, lt FROM buckets WHERE key = p_buckets[i];
                IF NOT FOUND THEN
                    lv := 0.0;
                    er := 0.0;
                ELSIF p_now > lt AND p_taus[i] > 0 THEN
                    lv := lv * exp(-(p_now - lt) / p_taus[i]);
                    er := er * exp(-(p_now - lt) / p_taus[i]);
                END IF;
                INSERT INTO buckets (key, level, earned, t, forget_at)
                VALUES (p_buckets[i], greatest(0.0, lv - p_refund), er + 1.0, p_now, p_forget[i])
                ON CONFLICT (key) DO UPDATE SET level = EXCLUDED.level,
                    earned = EXCLUDED.earned, t = EXCLUDED.t, forget_at = EXCLUDED.forget_at;
            END LOOP;
        END IF;
        IF p_until IS NOT NULL AND coalesce(array_length(p_trusted, 1), 0) > 0 THEN
            INSERT INTO flags (key, value, until) VALUES (p_trusted[1], '1', p_until)
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, until = EXCLUDED.until;
        END IF;
        {rate_log.pg_record("p_counters", "p_now", "1")};
    EXCEPTION WHEN OTHERS THEN
        RETURN 2;
    END;
    RETURN 1;
END
$fn$
"""  # noqa: S608 - constant SQL built from rate_log's texts

SETTLE_CALL = (
    "SELECT otpguard_settle(%s::text, %s::float8, %s::text, %s::text[], %s::jsonb, "
    "%s::text[], %s::int8[], %s::text[], %s::int8[], %s::text[], %s::text[], %s::float8, "
    "%s::text[], %s::float8[], %s::float8[], %s::float8, %s::text[])"
)


def settle_params(s: Settlement, event_row: Callable[[Event], tuple[Any, ...]]) -> tuple[Any, ...]:
    """``SETTLE_CALL``'s parameters for ``s``; ``event_row`` is the store's row of an
    event (its last column, the details, is passed as JSON here)."""
    events = [dict(zip(E_FIELDS, (*event_row(e)[:-1], e.details), strict=True))
              for e in s.events]  # fmt: skip
    buckets = list({b.key: b for b in s.buckets}.values())
    return (
        s.verification_id, s.now, s.code_hash, list(s.reserved), Jsonb(events),
        *counts_sql.pg_arrays(counters.of_events(s.events)),
        [k for k in s.flag_keys() if k.startswith(LIST_KEY_PREFIX)],
        list(s.trusted), s.trusted_until, [b.key for b in buckets],
        [b.tau for b in buckets], [s.now + admission.FORGET_AFTER_TAUS * b.tau
                                   for b in buckets],
        s.refund, [r.key for r in s.counters],
    )  # fmt: skip
