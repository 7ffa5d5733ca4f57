"""Event counts in Redis (``counters.py`` says what they count), and the two scripts
that raise them in the same call that stores what they count.

Per family of kinds, in the events' hash tag (one slot in Cluster, so a script may
touch them with the events and the tallies)::

    og:{ev}:cnt:<family>        hash   "minute|kind" -> count
    og:{ev}:cnt:<family>:idx    zset   "minute|kind" by minute (window reads, purge, cap)

Each family keeps at most ``max_events`` fields (the oldest minutes go first), and
the keys expire with the events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..counters import FAMILIES, family_of
from .base import EventCount
from .redis_base import BATCH

# bump(k0, a0, cap, ttl): the count keys are KEYS[k0 ..] (hash, index, per family in
# FAMILIES order); ARGV[a0 ..] holds (family number, field, minute, n) quads.
_BUMP_LIB = """
local function bump(k0, a0, cap, ttl)
  local touched = {}
  for i = a0, #ARGV, 4 do
    local f = tonumber(ARGV[i])
    local n = tonumber(ARGV[i + 3])
    if redis.call('HINCRBY', KEYS[k0 + 2 * f], ARGV[i + 1], n) == n then
      redis.call('ZADD', KEYS[k0 + 2 * f + 1], ARGV[i + 2], ARGV[i + 1])
    end
    touched[f] = true
  end
  for f, _ in pairs(touched) do
    local h, idx = KEYS[k0 + 2 * f], KEYS[k0 + 2 * f + 1]
    local excess = redis.call('ZCARD', idx) - cap
    while excess > 0 do  -- over the cap: drop the oldest minutes
      local fields = redis.call('ZRANGE', idx, 0, math.min(excess, 500) - 1)
      redis.call('ZREM', idx, unpack(fields))
      redis.call('HDEL', h, unpack(fields))
      excess = excess - #fields
    end
    redis.call('PEXPIRE', h, ttl)
    redis.call('PEXPIRE', idx, ttl)
  end
end
"""

# KEYS: ev:id, ev:ts, ev:data, then the count keys; ARGV: max_events, ttl_ms, number of
# events, their (id, ts, json) triples, then the count quads.
ADD_EVENTS_LUA = (
    _BUMP_LIB
    + """
local last = 3 + 3 * tonumber(ARGV[3])
for i = 4, last, 3 do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
while excess > 0 do  -- over the cap: drop the oldest ids
  local ids = redis.call('ZRANGE', KEYS[1], 0, math.min(excess, 500) - 1)
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('ZREM', KEYS[2], unpack(ids))
  redis.call('HDEL', KEYS[3], unpack(ids))
  excess = excess - #ids
end
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[2]) end
bump(4, last + 1, tonumber(ARGV[1]), ARGV[2])
return 1
"""
)

# KEYS: tally:n, tally:last, tally:ex, tally:idx, then the count keys; ARGV: field,
# minute, ts, example json, max_events, ttl_ms, then the example's count quads (raised
# from the second refusal on: the first is counted as the event it is stored as).
TALLY_LUA = (
    _BUMP_LIB
    + """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if n == 1 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
end
local last = redis.call('HGET', KEYS[2], ARGV[1])
if not last or tonumber(last) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
local excess = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[5])
while excess > 0 do  -- over the cap: drop the oldest minutes
  local fields = redis.call('ZRANGE', KEYS[4], 0, math.min(excess, 500) - 1)
  redis.call('ZREM', KEYS[4], unpack(fields))
  for k = 1, 3 do redis.call('HDEL', KEYS[k], unpack(fields)) end
  excess = excess - #fields
end
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[6]) end
if n > 1 then bump(5, 7, tonumber(ARGV[5]), ARGV[6]) end
return n
"""
)

# KEYS: one family's hash and index; ARGV: bound, batch. Deletes up to batch fields of
# minutes before bound.
PURGE_COUNTS_LUA = """
local fields = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #fields == 0 then return 0 end
redis.call('ZREM', KEYS[2], unpack(fields))
redis.call('HDEL', KEYS[1], unpack(fields))
return #fields
"""


def count_keys(prefix: str) -> tuple[str, ...]:
    """Hash and index of every family, in FAMILIES order (the scripts' layout)."""
    out: list[str] = []
    for family in FAMILIES:
        out += [f"{prefix}:{{ev}}:cnt:{family}", f"{prefix}:{{ev}}:cnt:{family}:idx"]
    return tuple(out)


def family_keys(keys: Sequence[str], family: str) -> tuple[str, str]:
    i = FAMILIES.index(family)
    return keys[2 * i], keys[2 * i + 1]


def quads(rows: Sequence[tuple[int, str, int]]) -> list[Any]:
    """The scripts' ARGV for ``counters.increments`` rows."""
    out: list[Any] = []
    for minute, kind, n in rows:
        out += [FAMILIES.index(family_of(kind)), f"{minute}|{kind}", minute, n]
    return out


async def read_counts(
    client: Any, keys: Sequence[str], since: float, until: float, family: str
) -> list[EventCount]:
    """One family's counts of the minutes that start in ``[since, until)``."""
    h, idx = family_keys(keys, family)
    fields: list[str] = await client.zrangebyscore(idx, since, f"({until}")
    out: list[EventCount] = []
    for i in range(0, len(fields), BATCH):
        batch = fields[i : i + BATCH]
        for name, n in zip(batch, await client.hmget(h, batch), strict=True):
            if n is None:  # purged between the reads
                continue
            minute, _, kind = name.partition("|")
            out.append(EventCount(int(minute), kind, int(n)))
    return out
