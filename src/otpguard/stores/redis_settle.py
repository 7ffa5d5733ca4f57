"""``Store.settle`` in the Redis store (``settlement.py`` says what it does).

On one Redis (and in Cluster when every key shares a slot) it is one script: the
existing scripts of ``approve`` (also matching a kept resend's tags), ``release``,
``add_events``, ``credit``, ``set_flag`` and ``hit`` run as functions of it, each on
its own slice of KEYS and ARGV, with the trusted flags and the number lists read in
between. The bookkeeping after the approval runs under ``pcall``: a Redis script is
not rolled back, so a failure there leaves the approval standing, reported as 2.

Over several Cluster slots, the approval is that script on the verification's slot
alone, then the bookkeeping the existing per-slot operations, one after the other
(as ``redis_cluster.py`` does for ``hit`` and ``admit``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import StorageError
from ..numberlists import KEY_PREFIX, flag_keys
from . import redis_counts
from .redis_admin import FLAG_KEEP, RedisAdmin
from .redis_lua import LIB, SET_FLAG_LUA, ms, ts
from .redis_lua_rates import (
    CREDIT_LUA,
    HIT_LUA,
    LUA_BUCKETS,
    LUA_RULES,
    RELEASE_LUA,
    credit_args,
    keep_of,
    rate_keys,
    record_args,
    rule_args,
)
from .redis_rates import RedisRates
from .redis_verifications import RedisVerifications
from .settlement import Settlement, bookkeeping_failed

# KEYS: verification; ARGV: now, code_hash. APPROVE_LUA, also when the stored tags are
# code_hash and a kept resend's after it.
_APPROVE = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'pending' then return 0 end
if tonumber(redis.call('HGET', h, 'expires_at')) <= tonumber(ARGV[1]) then return 0 end
local stored, compared = redis.call('HGET', h, 'code_hash'), ARGV[2]
if stored ~= compared and string.sub(stored, 1, #compared + 1) ~= compared .. ' ' then
  return 0
end
redis.call('HSET', h, 'status', 'approved', 'updated_at', ARGV[1])
return 1
"""

#: The sections of the script, in order: each one's keys and ARGV are a slice.
SECTIONS = ("approve", "release", "events", "trusted", "lists", "credit", "trust", "count")

# settle_(parts, now): parts[s] = {keys, args} of SECTIONS[s]. Returns 0 (not approved
# by this call), 1 (settled) or 2 (approved; the bookkeeping failed). Also the last
# step of a check by id judged in its one script (redis_check.py).
SETTLE_FUNCTION = """
local function settle_(parts, now)
  if approve_(parts[1][1], parts[1][2]) == 0 then return 0 end
  local function listed()
    local p = parts[5]
    if #p[1] == 0 then return false end
    local packed = redis.call('HMGET', p[1][1], unpack(p[2]))
    for i = 1, #p[2] do
      local e = packed[i]
      if e then  -- "<until>|<value>"; a value is numberlists.encode's canonical JSON
        local bar = string.find(e, '|', 1, true)
        if tonumber(string.sub(e, 1, bar - 1)) > now
            and string.find(e, '"kind":"allow"', bar, true) then
          return true
        end
      end
    end
    return false
  end
  local function bookkeeping()
    if #parts[2][1] > 0 then release_(parts[2][1], parts[2][2]) end
    if #parts[3][2] > 0 then events_(parts[3][1], parts[3][2]) end
    local trusted = false
    for _, k in ipairs(parts[4][1]) do
      local u = redis.call('HGET', k, 'until')
      if u and tonumber(u) > now then trusted = true end
    end
    if listed() then return end
    if not trusted and #parts[6][1] > 0 then credit_(parts[6][1], parts[6][2]) end
    if #parts[7][1] > 0 then trust_(parts[7][1], parts[7][2]) end
    if #parts[8][1] > 0 then count_(parts[8][1], parts[8][2]) end
  end
  if pcall(bookkeeping) then return 1 end
  return 2
end
"""

# ARGV: now, then per section (number of keys, number of args), then every section's
# args.
_DRIVER = """
local parts, ki, ai = {}, 1, 2 + 2 * 8
for s = 1, 8 do
  local nk, na = tonumber(ARGV[2 * s]), tonumber(ARGV[2 * s + 1])
  local k, a = {}, {}
  for i = 1, nk do k[i] = KEYS[ki + i - 1] end
  for i = 1, na do a[i] = ARGV[ai + i - 1] end
  parts[s] = {k, a}
  ki, ai = ki + nk, ai + na
end
return settle_(parts, tonumber(ARGV[1]))
"""


def _function(name: str, body: str) -> str:
    """An existing script as a local function of its own KEYS and ARGV."""
    return f"local function {name}_(KEYS, ARGV)\n{body}\nend\n"


#: The sections' functions and ``settle_``, for the scripts that settle.
SETTLING = (
    LIB
    + LUA_BUCKETS
    + _function("approve", _APPROVE)
    + _function("release", RELEASE_LUA)
    + _function("events", redis_counts.ADD_EVENTS_LUA)
    + _function("credit", CREDIT_LUA)
    + _function("trust", SET_FLAG_LUA)
    + _function("count", LUA_RULES + HIT_LUA)
    + SETTLE_FUNCTION
)
SETTLE_LUA = SETTLING + _DRIVER
SCRIPTS = {"settle": SETTLE_LUA}

Part = tuple[list[str], list[Any]]


class RedisSettle(RedisVerifications, RedisRates, RedisAdmin):
    async def settle(self, s: Settlement) -> bool:
        parts = self._settle_parts(s)
        keys = [k for ks, _ in parts for k in ks]
        if not self._one_slot(keys):
            return await self._settle_by_slot(s)
        header = [n for ks, args in parts for n in (len(ks), len(args))]
        args = [ts(s.now), *header, *(a for _, part in parts for a in part)]
        out = int(await self._run("settle", keys, args))
        if out == 2:
            bookkeeping_failed(s.verification_id)
        return out != 0

    def _settle_parts(self, s: Settlement, *, approve_only: bool = False) -> list[Part]:
        """Each section's keys and ARGV (``SECTIONS``); empty ones are skipped."""
        none: Part = ([], [])
        parts: list[Part] = [([self._vkey(s.verification_id)], [ts(s.now), s.code_hash])]
        if approve_only:
            return parts + [none] * (len(SECTIONS) - 1)
        reserved = list(dict.fromkeys(s.reserved))
        parts.append(([self._rkey(k) for k in reserved], [ts(s.now), 1]) if reserved else none)
        events = self._events_call(s.events)
        parts.append(events if s.events else none)
        parts.append(([self._fkey(k) for k in s.trusted], []))
        patterns = [k[len(KEY_PREFIX) :] for k in flag_keys(s.number)] if s.number else []
        parts.append(([self._list_keys()[0]], patterns) if patterns else none)
        credit = ([self._bkey(b.key) for b in s.buckets], credit_args(s.buckets, s.refund, s.now))
        parts.append(credit if s.buckets else none)
        if s.trusted and s.trusted_until is not None:
            ttl = ms(max(0.0, s.trusted_until - time.time()) + FLAG_KEEP)
            parts.append(([self._fkey(s.trusted[0])], ["1", ts(s.trusted_until), ttl]))
        else:
            parts.append(none)
        rules = tuple(s.counters)
        rkeys = rate_keys(rules)
        count: list[Any] = [ts(s.now), 1, os.urandom(8).hex(), *rule_args(rules, rkeys)]
        count += record_args(rkeys, keep_of(rules), True)
        parts.append(([self._rkey(k) for k in rkeys], count) if rules else none)
        return parts

    async def _settle_by_slot(self, s: Settlement) -> bool:
        """Cluster, keys in several slots: the approval alone, then the bookkeeping."""
        parts = self._settle_parts(s, approve_only=True)
        header = [n for ks, args in parts for n in (len(ks), len(args))]
        args = [ts(s.now), *header, *(a for _, part in parts for a in part)]
        if not int(await self._run("settle", parts[0][0], args)):
            return False
        try:
            await self.release(s.reserved, s.now)
            await self.add_events(s.events)
            flags = await self.get_flags(s.flag_keys(), s.now)
            if s.listed(flags):
                return True
            if s.credits(flags):
                await self.credit(s.buckets, s.refund, s.now)
            if s.trusted and s.trusted_until is not None:
                await self.set_flag(s.trusted[0], "1", s.trusted_until)
            await self.hit(s.counters, s.now)
        except StorageError:  # the operations above are translated ones
            bookkeeping_failed(s.verification_id)
        return True
