"""The Redis store's rate-window and admission-bucket scripts, and the ARGV they read.

``judge`` and ``record`` are the rules part of ``hit`` and ``admit``; the bucket
functions are ``admission.py``'s arithmetic, exactly. Which rule refuses, and with
which oldest entry, is decided inside the script (atomic with the write); the
decision itself (``base.allowed_decision``, ``base.refusal``: the fullest rule's
count, ``retry_after``) is made from what the script returns, as in every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import admission
from ..models import Bucket, RateDecision, RateRule
from .base import refusal
from .redis_lua import LIB, ms, ts

RATE_KEEP = 3_600  # seconds a rate log outlives its longest window since the last hit

# The rules part of hit and admit (in _LUA_LIB): judge(now, cost, at) reads, from
# ARGV[at + 1], nrules, then per rule (key index, limit, window, ours, enforced,
# seen key index or 0). ``ours`` is how many entries this same call already added
# to the key (Cluster); a rule not ``enforced`` (record-only) is neither counted nor
# refusing; a rule whose seen key has an entry in the rule's window is skipped:
# neither enforced nor recorded. Returns a refusal {rule index, count, oldest ts or
# ''}, or nil, the counts {0, count per rule}, the keys to record and the last ARGV
# index read. record(...) then reads per key (keep, ttl_ms): keep > 0 adds ``cost``
# entries to a key some unskipped rule uses, then drops entries older than ``keep``.
LUA_RULES = """
local function judge(now, cost, at)
  local nrules = tonumber(ARGV[at + 1])
  local counts, live = {0}, {}
  for i = 1, nrules do
    local b = at + 1 + (i - 1) * 6
    local ki = tonumber(ARGV[b + 1])
    local limit, window = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local start = '(' .. fmt(now - window)
    local si = tonumber(ARGV[b + 6])
    local n = 0
    if si == 0 or redis.call('ZCOUNT', KEYS[si], start, '+inf') == 0 then
      live[ki] = true
      if ARGV[b + 5] == '1' then
        n = redis.call('ZCOUNT', KEYS[ki], start, '+inf') - tonumber(ARGV[b + 4])
        if n + cost > limit then
          local must_leave = n + cost - limit
          local oldest = ''
          if must_leave <= n then
            oldest = redis.call('ZRANGEBYSCORE', KEYS[ki], start, '+inf', 'WITHSCORES',
              'LIMIT', must_leave - 1, 1)[2]
          end
          return {i, n, oldest}
        end
      end
    end
    counts[i + 1] = n
  end
  return nil, counts, live, at + 1 + nrules * 6
end

local function record(now_s, cost, nonce, live, at, nkeys)
  local now = tonumber(now_s)
  for j = 1, nkeys do
    local keep = tonumber(ARGV[at + (j - 1) * 2 + 1])
    if keep > 0 and live[j] then
      local batch = {}
      for i = 1, cost do
        batch[#batch + 1] = now_s
        batch[#batch + 1] = now_s .. ':' .. nonce .. ':' .. i
        if #batch >= 1000 or i == cost then
          redis.call('ZADD', KEYS[j], unpack(batch))
          batch = {}
        end
      end
      redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', fmt(now - keep))
      extend(KEYS[j], ARGV[at + (j - 1) * 2 + 2])
    end
  end
end
"""

# The bucket arithmetic of admission.py, exactly: decayed, fits, retry_after.
LUA_BUCKETS = """
local function bucket_state(key, now, tau)
  local h = redis.call('HMGET', key, 'level', 'earned', 't')
  if not h[1] then return 0.0, 0.0 end
  local level, earned, last = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  if now <= last or tau <= 0 then return level, earned end
  local factor = math.exp(-(now - last) / tau)
  return level * factor, earned * factor
end

local function fits(base, share, level, earned, pressure)
  return level + 1 <= (1.0 - pressure) * (base + share * earned) + 1e-9
end

local function retry_after(base, tau, share, level, earned)
  local room = base + share * earned - 1
  if level <= 0 then return 1.0 end
  if room <= 0 then
    room = base - 1
    if room <= 0 then return tau end
  end
  if level <= room then return 1.0 end
  return math.max(1.0, tau * math.log(level / room))
end

local function bucket_write(key, level, earned, now_s, ttl_ms, forget_at)
  redis.call('HSET', key, 'level', fmt(level), 'earned', fmt(earned), 't', now_s,
    'forget_at', forget_at)
  redis.call('PEXPIRE', key, ttl_ms)
end
"""

# Store.hit. KEYS: distinct rate logs (rule keys and seen keys).
# ARGV: now, cost, nonce, then the rules (judge) and per key (keep, ttl_ms).
HIT_LUA = """
local refusal, counts, live, at = judge(tonumber(ARGV[1]), tonumber(ARGV[2]), 3)
if refusal then return refusal end
if tonumber(ARGV[2]) > 0 then record(ARGV[1], tonumber(ARGV[2]), ARGV[3], live, at, #KEYS) end
return counts
"""

# Store.admit (cost 1). KEYS: nrk rate logs, then the buckets.
# ARGV: now, nonce, nrk, the rules (judge), per rate log (keep, ttl_ms), then
# nbuckets, pressure or '', force ('1' or '0'), per bucket (base, tau, share,
# ttl_ms, forget_at). Returns the counts as hit does, a rule's refusal as hit does,
# or a bucket's: {-bucket index, level, retry_after, challenge (0 or 1)}.
ADMIT_LUA = """
local now = tonumber(ARGV[1])
local nrk = tonumber(ARGV[3])
local refusal, counts, live, at = judge(now, 1, 3)
if refusal then return refusal end
local bb = at + nrk * 2
local nb = tonumber(ARGV[bb + 1])
local pressure, force = ARGV[bb + 2], ARGV[bb + 3] == '1'
local states = {}
for j = 1, nb do
  local c = bb + 3 + (j - 1) * 5
  local base, tau, share = tonumber(ARGV[c + 1]), tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3])
  local level, earned = bucket_state(KEYS[nrk + j], now, tau)
  if not force then
    if not fits(base, share, level, earned, 0.0) then
      return {-j, fmt(level), fmt(retry_after(base, tau, share, level, earned)), 0}
    end
    if pressure ~= '' and not fits(base, share, level, earned, tonumber(pressure)) then
      return {-j, fmt(level), fmt(retry_after(base, tau, share, level, earned)), 1}
    end
  end
  states[j] = {level, earned}
end
record(ARGV[1], 1, ARGV[2], live, at, nrk)
for j = 1, nb do
  local c = bb + 3 + (j - 1) * 5
  bucket_write(KEYS[nrk + j], states[j][1] + 1, states[j][2], ARGV[1], ARGV[c + 4], ARGV[c + 5])
end
return counts
"""

# Store.credit. KEYS: buckets; ARGV: now, refund, per bucket (tau, ttl_ms, forget_at).
CREDIT_LUA = """
local now, refund = tonumber(ARGV[1]), tonumber(ARGV[2])
local states = {}
for j = 1, #KEYS do
  local level, earned = bucket_state(KEYS[j], now, tonumber(ARGV[2 + (j - 1) * 3 + 1]))
  states[j] = {math.max(0.0, level - refund), earned + 1.0}
end
for j = 1, #KEYS do
  local c = 2 + (j - 1) * 3
  bucket_write(KEYS[j], states[j][1], states[j][2], ARGV[1], ARGV[c + 2], ARGV[c + 3])
end
return 1
"""

# Cluster: takes back one send admitted at ``now`` from a bucket (a later refusal).
# KEYS: bucket; ARGV: now, tau. When the row was since written at a later t, the
# send had decayed to e^-(t - now)/tau by then; t itself is kept.
GIVE_BACK_LUA = """
local h = redis.call('HMGET', KEYS[1], 'level', 't')
if not h[1] then return 0 end
local now, t, tau = tonumber(ARGV[1]), tonumber(h[2]), tonumber(ARGV[2])
local amount = 1.0
if t > now and tau > 0 then amount = math.exp(-(t - now) / tau) end
redis.call('HSET', KEYS[1], 'level', fmt(math.max(0.0, tonumber(h[1]) - amount)))
return 1
"""

# Store.release. KEYS: rate logs; ARGV: at, cost. Up to cost entries scored at per key.
RELEASE_LUA = """
for j = 1, #KEYS do
  local m = redis.call('ZRANGEBYSCORE', KEYS[j], ARGV[1], ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  if #m > 0 then redis.call('ZREM', KEYS[j], unpack(m)) end
end
return 1
"""

# KEYS: bucket; ARGV: now. Deletes the bucket if forget_at < now.
PURGE_BUCKET_LUA = """
local f = redis.call('HGET', KEYS[1], 'forget_at')
if not f or tonumber(f) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

_WITH_RULES = {"hit", "admit"}
_WITH_BUCKETS = {"admit", "credit"}
SCRIPTS = {
    name: LIB
    + (LUA_RULES if name in _WITH_RULES else "")
    + (LUA_BUCKETS if name in _WITH_BUCKETS else "")
    + code
    for name, code in {
        "hit": HIT_LUA,
        "admit": ADMIT_LUA,
        "credit": CREDIT_LUA,
        "give_back": GIVE_BACK_LUA,
        "release": RELEASE_LUA,
        "purge_bucket": PURGE_BUCKET_LUA,
    }.items()
}


def keep_of(rules: Sequence[RateRule]) -> dict[str, int]:
    """Entries are kept for the longest window hitting the key in this call (limits.py
    puts the window in the key, so a key is always hit with the same windows)."""
    keep: dict[str, int] = {}
    for r in rules:
        keep[r.key] = max(keep.get(r.key, 0), r.window)
    return keep


def rate_keys(rules: Sequence[RateRule]) -> list[str]:
    """The distinct rate keys of one call: the rules' keys, then their seen keys."""
    keys = [r.key for r in rules] + [r.skip_if_seen for r in rules if r.skip_if_seen is not None]
    return list(dict.fromkeys(keys))


def rule_args(rules: Sequence[RateRule], keys: list[str]) -> list[Any]:
    """``judge``'s ARGV: a record-only rule is neither counted nor refusing."""
    args: list[Any] = [len(rules)]
    for r in rules:
        seen = 0 if r.skip_if_seen is None else keys.index(r.skip_if_seen) + 1
        args += [keys.index(r.key) + 1, r.limit, r.window, 0, int(not r.record_only), seen]
    return args


def record_args(keys: Sequence[str], keep: dict[str, int], record: bool) -> list[Any]:
    """``record``'s ARGV: per key, how long to keep entries (0: add none) and its TTL."""
    args: list[Any] = []
    for key in keys:
        args += [keep.get(key, 0) if record else 0, ms(keep.get(key, 0) + RATE_KEEP)]
    return args


def forget_at(b: Bucket, now: float) -> float:
    return now + admission.FORGET_AFTER_TAUS * b.tau


def bucket_ttl(b: Bucket) -> int:
    return ms(admission.FORGET_AFTER_TAUS * b.tau)


def bucket_args(
    buckets: Sequence[Bucket], now: float, pressure: float | None, force: bool
) -> list[Any]:
    args: list[Any] = [len(buckets), "" if pressure is None else repr(float(pressure))]
    args.append("1" if force else "0")
    for b in buckets:
        args += [repr(float(b.base)), repr(float(b.tau)), repr(float(b.share)),
                 bucket_ttl(b), ts(forget_at(b, now))]  # fmt: skip
    return args


def credit_args(buckets: Sequence[Bucket], refund: int, now: float) -> list[Any]:
    args: list[Any] = [ts(now), refund]
    for b in buckets:
        args += [repr(float(b.tau)), bucket_ttl(b), ts(forget_at(b, now))]
    return args


def rule_refusal(r: RateRule, out: Sequence[Any], now: float) -> RateDecision:
    """``base.refusal`` from ``judge``'s answer ``{rule index, count, oldest ts or ''}``
    (no oldest entry: the cost never fits)."""
    oldest = None if out[2] in ("", None) else float(out[2])
    return refusal(r, int(out[1]), oldest, now)


def bucket_refusal(b: Bucket, out: Sequence[Any]) -> RateDecision:
    level, wait, challenge = float(out[1]), float(out[2]), out[3] == 1
    return RateDecision(False, b.name, wait, int(level), challenge=challenge, key=b.key)
