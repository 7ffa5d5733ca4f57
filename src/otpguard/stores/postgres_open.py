"""PostgreSQL's ``Store.open_check`` in one call, one round trip: the server-side
function ``otpguard_open_check`` (a migration step of ``postgres_sql``), its
parameters and its answer (``opening.py`` says what it does)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .decisions import refusal
from .opening import CheckOpened, CheckOpening, Opened
from .sql import V_COLUMNS, verification_from_row
from .sql_store import ticket

# The row is locked first (as settle and record_attempt lock it), then the rate keys
# (otpguard_judge's advisory locks, as hit takes them). p_complete[i]: the number
# completes rule i's key. The rows come back as JSON: as read, and after the attempt.
OPEN_FUNCTION = """
CREATE FUNCTION otpguard_open_check(
    p_id text, p_owner text, p_length int, p_max int, p_now float8, p_complete bool[],
    p_keys text[], p_starts float8[], p_limits bigint[], p_enforced bool[], p_seen text[]
) RETURNS TABLE (
    outcome text, refused int, counts bigint[], oldest float8, changed bool,
    before jsonb, after jsonb
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v verifications%ROWTYPE;
    w verifications%ROWTYPE;
    j record;
BEGIN
    SELECT * INTO v FROM verifications WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR (p_owner IS NOT NULL AND v.owner IS NOT NULL AND v.owner <> p_owner) THEN
        outcome := 'not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    before := to_jsonb(v);
    IF v.code_length <> p_length THEN
        outcome := 'malformed';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO j FROM otpguard_judge(
        ARRAY(SELECT CASE WHEN p_complete[i] THEN p_keys[i] || v.to_number ELSE p_keys[i] END
              FROM generate_subscripts(p_keys, 1) AS i ORDER BY i),
        p_starts, p_limits, p_enforced, p_seen, 1, p_now, true, true, '{}');
    counts := j.counts;
    IF j.refused > 0 THEN
        outcome := 'refused';
        refused := j.refused;
        oldest := j.oldest;
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE verifications SET
        status = CASE WHEN expires_at <= p_now THEN 'expired' ELSE status END,
        attempts = CASE WHEN expires_at <= p_now THEN attempts ELSE attempts + 1 END,
        updated_at = p_now
    WHERE id = p_id AND status = 'pending' AND (expires_at <= p_now OR attempts < p_max)
    RETURNING * INTO w;
    changed := FOUND;
    outcome := 'opened';
    after := CASE WHEN changed THEN to_jsonb(w) ELSE before END;
    RETURN NEXT;
END
$fn$
"""

OPEN_CALL = (
    "SELECT outcome, refused, counts, oldest, changed, before, after FROM otpguard_open_check("
    "%s::text, %s::text, %s::int, %s::int, %s::float8, %s::bool[], %s::text[], %s::float8[], "
    "%s::int8[], %s::bool[], %s::text[])"
)

_COLUMNS = [c.strip() for c in V_COLUMNS.split(",")]


def open_params(o: CheckOpening) -> tuple[Any, ...]:
    """``OPEN_CALL``'s parameters: the rules as otpguard_judge takes them."""
    rules = [*o.number_rules, *o.ip_rules]
    complete = [True] * len(o.number_rules) + [False] * len(o.ip_rules)
    return (
        o.verification_id, o.owner, o.code_length, o.max_attempts, o.now, complete,
        [r.key for r in rules], [o.now - r.window for r in rules], [r.limit for r in rules],
        [not r.record_only for r in rules], [r.skip_if_seen for r in rules],
    )  # fmt: skip


def _row(stored: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(stored[c] for c in _COLUMNS)


def opened_from(o: CheckOpening, row: Sequence[Any]) -> CheckOpened:
    outcome, refused, counts, oldest, changed, before, after = row
    if outcome == Opened.NOT_FOUND:
        return CheckOpened(Opened.NOT_FOUND)
    v = verification_from_row(_row(before))
    if outcome == Opened.MALFORMED:
        return CheckOpened(Opened.MALFORMED, v)
    if outcome == Opened.REFUSED:
        rule = o.rules(v.to)[int(refused) - 1]
        return CheckOpened(Opened.REFUSED, v, refusal(rule, int(counts[-1]), oldest, o.now))
    return CheckOpened(Opened.OPENED, v, ticket=ticket(_row(after), bool(changed)))
