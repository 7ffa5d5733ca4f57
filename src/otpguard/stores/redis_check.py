"""``Store.check_by_id`` in the Redis store in one script, one round trip, outside
Cluster (whose keys lie in several slots: there it takes the contract's steps).

The script opens the check as ``open_check`` does (``redis_open.py``). When the
verification's hash holds a plan (written by its start: ``plan_field``) and only tags
of the current form (``codes.py``), it judges the check as the engine's
``Checking._verdict`` would and carries the outcome out in the same script:

* the attempt was not counted (already final, at the cap, or it expired now): the
  reservation given back, and an expired row's ``verification.expired`` stored;
* a presented tag is one of the row's: ``settle_`` (``redis_settle.py``) with the
  sections the plan names;
* else ``check.failed`` stored and, at ``max_attempts``, the row locked and
  ``verification.locked`` stored.

The plan keeps what the number decides, resolved to this store's keys: each event's
JSON as ``Event.to_json`` writes it with the check's own values left as
placeholders (its id, time, client IP and the attempts), its counter kinds, and the
approval's trusted flags, allow-list patterns, buckets and counters. The engine then
judges the returned hash itself, the seal included, and announces the events the
script stored. A hash without a plan, or with a tag of the earlier form: only
opened, and the engine carries its verdict out as the operations it is.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from .. import admission, counters
from ..events import Event
from ..models import Verification
from ..numberlists import KEY_PREFIX
from .base import Started
from .opening import CheckOpening, Presented
from .redis_admin import FLAG_KEEP
from .redis_lua import ATTEMPT_FUNCTION, ms, ts
from .redis_lua_rates import LUA_RULES, bucket_ttl, keep_of, rate_keys, record_args, rule_args
from .redis_open import OPEN_BODY, RedisOpen
from .redis_settle import SETTLING, RedisSettle, _function
from .settlement import Plan

#: What a template leaves for the check to fill in (JSON strings as to_json writes them).
HOLES = {"id": "\x00I", "ts": "\x00T", "client_ip": "\x00P", "type": "\x00Y", "details": "\x00D"}

# KEYS: open's (rate logs, verification), then the events' keys. ARGV: open's, then
# the presented tags (count, tags), the four event ids, now as JSON, the client IP as
# JSON, the minute, trusted-until ('' for none), the trusted flag's TTL, a nonce, max
# attempts, max events, the events' TTL; last, how many KEYS and ARGV are open's.
CHECK_LUA = (
    SETTLING
    + _function("open", LUA_RULES + ATTEMPT_FUNCTION + OPEN_BODY)  # on open's KEYS, ARGV
    + """
local nko, nao = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local ok, oa = {}, {}
for i = 1, nko do ok[i] = KEYS[i] end
for i = 1, nao do oa[i] = ARGV[i] end
local out = open_(ok, oa)
local function unplanned(flat)  -- a hash's fields without its plan (the engine reads none)
  if type(flat) ~= 'table' then return flat end
  local kept = {}
  for i = 1, #flat, 2 do
    if flat[i] ~= 'plan' then
      kept[#kept + 1] = flat[i]
      kept[#kept + 1] = flat[i + 1]
    end
  end
  return kept
end
out[2], out[4] = unplanned(out[2]), unplanned(out[4])
if out[1] ~= 'opened' then return out end
local h = ok[nko]
local raw = redis.call('HGET', h, 'plan')
local kids, tags = {}, {}
for k in string.gmatch(redis.call('HGET', h, 'key_id'), '%S+') do kids[#kids + 1] = k end
for t in string.gmatch(redis.call('HGET', h, 'code_hash'), '%S+') do
  local mac = string.match(t, '^2%.(%x+)%.%x+$')
  if not mac then raw = nil end
  tags[#tags + 1] = mac
end
local decoded, plan = false, nil
if raw then decoded, plan = pcall(cjson.decode, raw) end
if not decoded or type(plan) ~= 'table' or type(plan.ev) ~= 'string' then  -- not judged
  return {out[1], out[2], out[3], out[4], 0}
end
local x = nao
local presented = {}
for i = 1, tonumber(ARGV[x + 1]) do presented[ARGV[x + 1 + i]] = true end
x = x + 1 + tonumber(ARGV[x + 1])
local ids = {ARGV[x + 1], ARGV[x + 2], ARGV[x + 3], ARGV[x + 4]}
local now_s, ip, minute = ARGV[x + 5], ARGV[x + 6], ARGV[x + 7]
local until_s, trust_ttl, nonce = ARGV[x + 8], ARGV[x + 9], ARGV[x + 10]
local max_attempts, max_events, event_ttl = ARGV[x + 11], ARGV[x + 12], ARGV[x + 13]
local event_ts = ARGV[x + 14]
local now = tonumber(now_s)
local ekeys = {}
for i = nko + 1, #KEYS do ekeys[#ekeys + 1] = KEYS[i] end
local reserved = {}
for i = 1, nko - 1 do reserved[i] = ok[i] end
local function fill(s, hole, value)
  local i, j = string.find(s, hole, 1, true)
  if not i then return s end
  return string.sub(s, 1, i - 1) .. value .. string.sub(s, j + 1)
end
local stored = {}
local function events(list)
  local args = {max_events, event_ttl, #list}
  local quads = {}
  for _, e in ipairs(list) do
    local details = {}
    if e[3] then details[#details + 1] = '"attempts":' .. e[3] end
    if plan.service ~= cjson.null then details[#details + 1] = '"service":' .. plan.service end
    local j = fill(plan.ev, '"\\\\u0000I"', '"' .. ids[e[2]] .. '"')
    j = fill(fill(j, '"\\\\u0000T"', event_ts), '"\\\\u0000P"', ip)
    j = fill(j, '"\\\\u0000Y"', '"' .. e[1] .. '"')
    j = fill(j, '{"\\\\u0000D":0}', '{' .. table.concat(details, ',') .. '}')
    args[#args + 1] = ids[e[2]]
    args[#args + 1] = event_ts
    args[#args + 1] = j
    stored[#stored + 1] = j
    for _, q in ipairs(plan.kinds[e[1]]) do
      quads[#quads + 1] = {q[1], minute .. '|' .. q[2], minute, 1}
    end
  end
  for _, q in ipairs(quads) do
    for _, v in ipairs(q) do args[#args + 1] = v end
  end
  return args
end
local outcome = out[3]
if outcome ~= 'counted' then
  release_(reserved, {now_s, 1})
  if outcome == 'expired' then
    events_(ekeys, events({{'verification.expired', 4}}))
  end
  return {out[1], out[2], out[3], out[4], 1, 0, 0, stored}
end
local matched = false
for i = 1, #tags do
  if presented[kids[i] .. '.' .. tags[i]] then matched = true end
end
if matched then
  local none = {{}, {}}
  local credit = {now_s, redis.call('HGET', h, 'sends')}
  for _, b in ipairs(plan.credit) do
    credit[#credit + 1] = b[1]
    credit[#credit + 1] = b[2]
    credit[#credit + 1] = fmt(now + tonumber(b[3]))
  end
  local parts = {
    {{h}, {now_s, redis.call('HGET', h, 'code_hash')}},
    {reserved, {now_s, 1}},
    {ekeys, events({{'check.passed', 1}})},
    {plan.trusted, {}},
    none, none, none, none,
  }
  if #plan.patterns > 0 then parts[5] = {{plan.lists}, plan.patterns} end
  if #plan.buckets > 0 then parts[6] = {plan.buckets, credit} end
  if #plan.trusted > 0 and until_s ~= '' then
    parts[7] = {{plan.trusted[1]}, {'1', until_s, trust_ttl}}
  end
  if #plan.counters > 0 then
    parts[8] = {plan.counters, {now_s, 1, nonce, unpack(plan.count)}}
  end
  local settled = settle_(parts, now)
  if settled == 0 then stored = {} end
  return {out[1], out[2], out[3], out[4], 1, settled, 0, stored}
end
local attempts = tonumber(redis.call('HGET', h, 'attempts'))
local failed = {{'check.failed', 2, tostring(attempts)}}
local locked = 0
if attempts >= tonumber(max_attempts) and redis.call('HGET', h, 'status') == 'pending' then
  redis.call('HSET', h, 'status', 'max_attempts_reached', 'updated_at', now_s)
  locked = 1
  failed[2] = {'verification.locked', 3}
end
events_(ekeys, events(failed))
return {out[1], out[2], out[3], out[4], 1, 0, locked, stored}
"""
)
SCRIPTS = {"check": CHECK_LUA}


def _template(v: Verification, plan: Plan) -> str:
    """The events of a judged check, as the engine's ``_event`` makes them for ``v``,
    with the check's own values as ``HOLES`` and the type and details as holes too."""
    e = Event(
        type=HOLES["type"], ts=HOLES["ts"], id=HOLES["id"],  # type: ignore[arg-type]  # a hole, not a time
        verification_id=v.id, number_masked=plan.number_masked,
        number_hash=plan.number_hash, country=v.country, channel=v.channel.value,
        client_ip=HOLES["client_ip"], details={HOLES["details"]: 0},
    )  # fmt: skip
    return e.to_json()


@functools.lru_cache(maxsize=1024)
def _kinds(country: str | None, channel: str) -> dict[str, list[list[Any]]]:
    """The counter kinds each event of a judged check is counted under, for a
    verification of ``country`` and ``channel``, each with its family's index
    (``redis_counts.quads``). Cached: they depend on nothing else."""
    out = {}
    for type_ in Presented.EVENTS:
        e = Event(type=type_, ts=0.0, country=country, channel=channel)
        out[type_] = [[counters.FAMILIES.index(counters.family_of(k)), k]
                      for k in counters.kinds_of(e)]  # fmt: skip
    return out


class RedisCheck(RedisSettle, RedisOpen):
    def plan_field(self, v: Verification, plan: Plan) -> str:
        """The plan as the verification's hash keeps it (this module's docstring)."""
        return self._plan_json(v, plan)

    def _plan_fields(self, start: Started) -> list[object]:
        """The start's plan as fields of its hash (none in Cluster)."""
        if start.plan is None or self._opts.cluster:
            return []
        return ["plan", self.plan_field(start.verification, start.plan)]

    def _plan_json(self, v: Verification, plan: Plan) -> str:
        rules = tuple(plan.counters)
        rkeys = rate_keys(rules)
        return json.dumps({
            "ev": _template(v, plan),
            "kinds": _kinds(v.country, v.channel.value),
            "service": None if v.service is None else json.dumps(v.service),
            "trusted": [self._fkey(k) for k in plan.trusted],
            "lists": self._list_keys()[0],
            "patterns": [k[len(KEY_PREFIX):] for k in plan.listed],
            "buckets": [self._bkey(b.key) for b in plan.buckets],
            "credit": [[repr(float(b.tau)), bucket_ttl(b), admission.FORGET_AFTER_TAUS * b.tau]
                       for b in plan.buckets],
            "counters": [self._rkey(k) for k in rkeys],
            "count": [*rule_args(rules, rkeys), *record_args(rkeys, keep_of(rules), True)],
        }, separators=(",", ":"))  # fmt: skip

    async def _check_script(self, o: CheckOpening, p: Presented) -> list[Any]:
        """The script's answer (outside Cluster)."""
        keys, args = self._open_call(o)
        until = p.trusted_until
        ttl = 0 if until is None else ms(max(0.0, until - time.time()) + FLAG_KEEP)
        minute = counters.minute_of(o.now)
        extra = [len(p.tags), *p.tags, *p.event_ids, ts(o.now), json.dumps(p.client_ip), minute]
        extra += ["" if until is None else ts(until), ttl, os.urandom(8).hex(), o.max_attempts]
        extra += [self._opts.max_events, ms(self._opts.event_ttl_days * 86_400.0)]
        extra += [json.dumps(o.now), len(keys), len(args)]
        ekeys, _ = self._events_call(())
        out: list[Any] = await self._run("check", [*keys, *ekeys], [*args, *extra])
        return out
