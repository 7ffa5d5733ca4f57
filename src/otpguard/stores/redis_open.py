"""``Store.open_check`` in the Redis store (``opening.py`` says what it does): one
script outside Cluster.

A number rule's rate log is named inside the script, from the verification's number
(the caller cannot name it before the row is read): the script is given the log's
key with the number left out and completes it. A script may touch keys it was not
given only outside Cluster; in Cluster, whose keys lie in several slots, the
contract's three steps run instead (``Store.open_check``).
"""

from __future__ import annotations

import os
from typing import Any

from ..models import AttemptOutcome, AttemptTicket
from .opening import CheckOpened, CheckOpening, Opened
from .redis_base import RedisBase
from .redis_lua import ATTEMPT_FUNCTION, LIB, ts
from .redis_lua_rates import LUA_RULES, keep_of, rate_keys, record_args, rule_args, rule_refusal
from .redis_verifications import from_hash

# KEYS: the rate logs (judge's), then the verification. ARGV: now, 1, nonce, the rules
# (judge), per rate log (keep, ttl_ms), then owner or '', code length, max attempts,
# how many logs the number completes, and their indexes in KEYS.
OPEN_BODY = """
local h = KEYS[#KEYS]
local nk = #KEYS - 1
local x = 4 + tonumber(ARGV[4]) * 6 + nk * 2
if redis.call('EXISTS', h) == 0 then return {'not_found'} end
local owner = redis.call('HGET', h, 'owner')
if ARGV[x + 1] ~= '' and owner and owner ~= ARGV[x + 1] then return {'not_found'} end
local before = redis.call('HGETALL', h)
if tonumber(redis.call('HGET', h, 'code_length')) ~= tonumber(ARGV[x + 2]) then
  return {'malformed', before}
end
local to = redis.call('HGET', h, 'to')
for i = 1, tonumber(ARGV[x + 4]) do
  local j = tonumber(ARGV[x + 4 + i])
  KEYS[j] = string.sub(KEYS[j], 1, -2) .. to .. '}'
end
local refusal, counts, live, at = judge(tonumber(ARGV[1]), 1, 3)
if refusal then return {'refused', before, refusal[1], refusal[2], refusal[3]} end
record(ARGV[1], 1, ARGV[3], live, at, nk)
local after = attempt(h, ARGV[x + 3], ARGV[1])
return {'opened', before, after[1], after[2]}
"""
OPEN_LUA = LIB + LUA_RULES + ATTEMPT_FUNCTION + OPEN_BODY
SCRIPTS = {"open_check": OPEN_LUA}


class RedisOpen(RedisBase):
    async def _open_check(self, o: CheckOpening) -> CheckOpened:
        """The script (outside Cluster)."""
        keys, args = self._open_call(o)
        return opened_from(o, await self._run("open_check", keys, args))

    def _open_call(self, o: CheckOpening) -> tuple[list[str], list[Any]]:
        """The open script's KEYS and ARGV."""
        number_keys = {r.key for r in o.number_rules}
        rules = (*o.number_rules, *o.ip_rules)
        keys = rate_keys(rules)
        args: list[Any] = [ts(o.now), 1, os.urandom(8).hex(), *rule_args(rules, keys)]
        args += record_args(keys, keep_of(rules), True)
        completed = [i + 1 for i, k in enumerate(keys) if k in number_keys]
        args += [o.owner or "", o.code_length, o.max_attempts, len(completed), *completed]
        return [*(self._rkey(k) for k in keys), self._vkey(o.verification_id)], args


def opened_from(o: CheckOpening, out: list[Any]) -> CheckOpened:
    """The open script's answer (its first four items) as a ``CheckOpened``."""
    outcome = Opened(out[0])
    if outcome is Opened.NOT_FOUND:
        return CheckOpened(outcome)
    v = from_hash(out[1])
    if outcome is Opened.REFUSED:
        rule = o.rules(v.to)[int(out[2]) - 1]
        return CheckOpened(outcome, v, rule_refusal(rule, out[2:5], o.now))
    if outcome is Opened.MALFORMED:
        return CheckOpened(outcome, v)
    ticket = AttemptTicket(AttemptOutcome(out[2]), from_hash(out[3]))
    return CheckOpened(outcome, v, ticket=ticket)
