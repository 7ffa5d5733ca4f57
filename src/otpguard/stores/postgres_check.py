"""PostgreSQL's ``Store.check_by_id`` in one call, one round trip: the server-side
function ``otpguard_check`` (a migration step of ``postgres_sql``), its parameters and
its answer.

It opens the check as ``otpguard_open_check`` does (``opening.py``), then, when the
row holds a plan (``settlement.Plan``, kept by its start) and only tags of the current
form (``codes.py``), judges it as the engine's ``Checking._verdict`` would and carries
the outcome out in the same transaction:

* the attempt was not counted (already final, at the cap, or it expired now): the
  reservation given back, and an expired row's ``verification.expired`` stored;
* a presented tag is one of the row's: ``otpguard_settle`` with what the plan says
  (``check.passed`` stored by it);
* else ``check.failed`` (its ``attempts``) stored and, at ``max_attempts``, the row
  locked and ``verification.locked`` stored.

The events are built from the row and the plan as the engine's ``_event`` builds them,
with the ids the engine chose (``opening.Presented``); every event of these four types
is counted under its ``t`` kind only (``counters.kinds_of``), which a test keeps true.
The engine then judges the returned row itself, the seal included, and announces the
events the function stored. A row without a plan or with a tag of the earlier form
(made before the upgrade, live for ``code_ttl``): only opened, and the engine carries
its verdict out as the operations they are (``opening.carried_out``).
"""

from __future__ import annotations

from typing import Any

from .. import admission
from . import postgres_open as po
from . import postgres_settle as ps
from . import rate_log
from .opening import (
    CheckClosed,
    CheckOpened,
    CheckOpening,
    Judge,
    Presented,
    carried_out,
    in_steps,
    judged_closed,
    stored_events,
)
from .postgres_open import open_params
from .settlement import Settlement, bookkeeping_failed
from .sql import E_FIELDS
from .sql_store import SQLStore

_PASSED, _FAILED, _LOCKED, _EXPIRED = Presented.EVENTS
_EVENT_COLUMNS = ", ".join(E_FIELDS)

# ev(i, type, details): the i-th presented id's event of ``type``, of the row ``w``.
CHECK_FUNCTION = f"""
CREATE FUNCTION otpguard_check(
    p_id text, p_owner text, p_length int, p_max int, p_now float8, p_complete bool[],
    p_keys text[], p_starts float8[], p_limits bigint[], p_enforced bool[], p_seen text[],
    p_presented text[], p_ip text, p_ids text[], p_until float8
) RETURNS TABLE (
    outcome text, refused int, counts bigint[], oldest float8, changed bool,
    before jsonb, after jsonb, judged bool, settled int, locked bool, stored jsonb
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    o record;
    v_plan jsonb;
    base jsonb;
    extra jsonb;
    reserved text[];
    v_kind text;
    v_minute bigint := (floor(p_now / 60) * 60)::bigint;
BEGIN
    SELECT * INTO o FROM otpguard_open_check(p_id, p_owner, p_length, p_max, p_now,
        p_complete, p_keys, p_starts, p_limits, p_enforced, p_seen);
    outcome := o.outcome;
    refused := o.refused;
    counts := o.counts;
    oldest := o.oldest;
    changed := o.changed;
    before := o.before;
    after := o.after;
    judged := false;
    settled := 0;
    locked := false;
    stored := '[]';
    v_plan := after -> 'plan';
    IF outcome <> 'opened' OR v_plan IS NULL OR jsonb_typeof(v_plan) <> 'object'
       OR EXISTS (SELECT 1 FROM unnest(string_to_array(after ->> 'code_hash', ' ')) AS t
                  WHERE left(t, 2) <> '2.') THEN
        RETURN NEXT;
        RETURN;
    END IF;
    judged := true;
    reserved := ARRAY(
        SELECT CASE WHEN p_complete[i] THEN p_keys[i] || (after ->> 'to_number') ELSE p_keys[i] END
        FROM generate_subscripts(p_keys, 1) AS i ORDER BY i);
    base := jsonb_build_object(
        'ts', p_now, 'verification_id', p_id, 'number_masked', v_plan -> 'm',
        'number_hash', v_plan -> 'h', 'country', after -> 'country', 'channel', after -> 'channel',
        'client_ip', p_ip, 'reason', NULL, 'rule', NULL, 'provider_code', NULL);
    extra := CASE WHEN after ->> 'service' IS NULL THEN '{{}}'::jsonb
                  ELSE jsonb_build_object('service', after -> 'service') END;
    v_kind := '|' || CASE WHEN after ->> 'channel' = 'email' THEN 'email'
                        ELSE coalesce(after ->> 'country', '') END;
    IF NOT changed OR after ->> 'status' = 'expired' THEN
        IF changed THEN
            stored := jsonb_build_array(base || jsonb_build_object(
                'id', p_ids[4], 'type', '{_EXPIRED}', 'details', extra));
        END IF;
        PERFORM pg_advisory_xact_lock(h)
        FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(reserved) AS k ORDER BY 1) AS s;
        {rate_log.pg_release("reserved", "p_now", "1")};
    ELSIF EXISTS (
        SELECT 1 FROM unnest(string_to_array(after ->> 'key_id', ' '),
                             string_to_array(after ->> 'code_hash', ' ')) AS x(kid, tag)
        WHERE kid || '.' || split_part(tag, '.', 2) = ANY(p_presented)) THEN
        stored := jsonb_build_array(base || jsonb_build_object(
            'id', p_ids[1], 'type', '{_PASSED}', 'details', extra));
        settled := otpguard_settle(
            p_id, p_now, after ->> 'code_hash', reserved, stored,
            ARRAY['t'], ARRAY[v_minute], ARRAY['t|{_PASSED}' || v_kind], ARRAY[1::bigint],
            ARRAY(SELECT jsonb_array_elements_text(v_plan -> 'listed')),
            ARRAY(SELECT jsonb_array_elements_text(v_plan -> 'trusted')),
            CASE WHEN jsonb_array_length(v_plan -> 'trusted') > 0 THEN p_until END,
            ARRAY(SELECT jsonb_array_elements_text(v_plan -> 'buckets')),
            ARRAY(SELECT x::float8 FROM jsonb_array_elements_text(v_plan -> 'taus') AS x),
            ARRAY(SELECT p_now + {admission.FORGET_AFTER_TAUS} * x::float8
                  FROM jsonb_array_elements_text(v_plan -> 'taus') AS x),
            CASE WHEN jsonb_array_length(v_plan -> 'trusted') > 0
                 THEN (after ->> 'sends')::float8 ELSE 0 END,
            ARRAY(SELECT jsonb_array_elements_text(v_plan -> 'counters')));
        IF settled = 0 THEN
            stored := '[]';
        END IF;
        RETURN NEXT;
        RETURN;
    ELSE
        stored := jsonb_build_array(base || jsonb_build_object(
            'id', p_ids[2], 'type', '{_FAILED}',
            'details', jsonb_build_object('attempts', (after ->> 'attempts')::int) || extra));
        IF (after ->> 'attempts')::int >= p_max THEN
            UPDATE verifications SET status = 'max_attempts_reached', updated_at = p_now
            WHERE id = p_id AND status = 'pending' AND attempts >= p_max;
            locked := FOUND;
            IF locked THEN
                stored := stored || jsonb_build_array(base || jsonb_build_object(
                    'id', p_ids[3], 'type', '{_LOCKED}', 'details', extra));
            END IF;
        END IF;
    END IF;
    INSERT INTO events ({_EVENT_COLUMNS})
    SELECT {_EVENT_COLUMNS} FROM jsonb_populate_recordset(NULL::events, stored);
    INSERT INTO event_counts (family, minute, kind, count)
    SELECT 't', v_minute, 't|' || (e ->> 'type') || v_kind, count(*)
    FROM jsonb_array_elements(stored) AS e GROUP BY e ->> 'type'
    ORDER BY 3
    ON CONFLICT (family, minute, kind) DO UPDATE SET count = event_counts.count + excluded.count;
    RETURN NEXT;
END
$fn$
"""  # noqa: S608 - constant SQL built from constants and rate_log's texts

CHECK_CALL = (
    "SELECT outcome, refused, counts, oldest, changed, before, after, judged, settled, "
    "locked, stored FROM otpguard_check(%s::text, %s::text, %s::int, %s::int, %s::float8, "
    "%s::bool[], %s::text[], %s::float8[], %s::int8[], %s::bool[], %s::text[], %s::text[], "
    "%s::text, %s::text[], %s::float8)"
)


def check_params(o: CheckOpening, p: Presented) -> tuple[Any, ...]:
    """``CHECK_CALL``'s parameters: the opening's, then what the check presents."""
    return (*open_params(o), list(p.tags), p.client_ip, list(p.event_ids), p.trusted_until)


class JudgedChecks(SQLStore):
    """PostgreSQL's check by id, its opening and its settlement, each one call."""

    async def open_check(self, o: CheckOpening) -> CheckOpened:
        """One call of ``otpguard_open_check`` (postgres_open.py): one round trip."""
        row = await self._run(lambda cur: cur.one(po.OPEN_CALL, po.open_params(o)))
        assert row is not None
        return po.opened_from(o, row)

    async def check_by_id(self, o: CheckOpening, judge: Judge) -> CheckClosed:
        """One call of ``otpguard_check`` (postgres_check.py), one round trip, when the
        check presents its tags; else (and for a row of before) as ``in_steps``."""
        if o.presented is None:
            return await in_steps(self, o, judge)
        params = check_params(o, o.presented)
        row = await self._run(lambda cur: cur.one(CHECK_CALL, params))
        assert row is not None
        opened = po.opened_from(o, row[:7])
        if not row[7]:  # not judged there: a row of before the upgrade
            return await carried_out(self, opened, judge(opened), o.now)
        stored = stored_events(opened, row[10])
        return judged_closed(opened, judge(opened), int(row[8]), bool(row[9]), stored)

    async def settle(self, s: Settlement) -> bool:
        """One call of ``otpguard_settle`` (postgres_settle.py): one round trip."""
        params = ps.settle_params(s, self._event_row)
        row = await self._run(lambda cur: cur.one(ps.SETTLE_CALL, params))
        assert row is not None
        if int(row[0]) == 2:
            bookkeeping_failed(s.verification_id)
        return int(row[0]) != 0
