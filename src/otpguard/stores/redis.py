"""The Redis store: one Redis, or a Redis Cluster, shared by every otpguard worker.

URLs (``docs/redis.md`` has the details)::

    redis://[[user]:password@]host:6379/0       one Redis
    rediss://...                                 the same over TLS
    redis+cluster://host:7000[,host:7001...]    Redis Cluster (database 0 only)

with optional query parameters ``prefix`` (key prefix, default ``og``), ``max_events``
(cap on stored events), ``event_ttl_days``, ``max_connections`` (connections per
process, per node in Cluster; default 100) and ``pool_timeout`` (seconds an operation
waits for a free connection, default 2; one Redis only); other query parameters go
to redis-py.

Every operation is one Lua script run with EVALSHA (redis-py's ``Script`` caches the
SHA and reloads the script after a restart) or one read. Keys are laid out for Redis
Cluster: a hash tag puts all keys one script touches into one slot::

    og:{v:<id>}              hash   one verification (TTL: lifetime + VERIFICATION_KEEP)
    og:{n:<e164>}:pending    zset   ids of that number's verifications by created_at
    og:{rl:<key>}            zset   sliding log of one rate key, score = ts
    og:{f:<key>}             hash   one flag: value, until
    og:{b:<key>}             hash   one admission bucket: level, earned, t, forget_at
    og:{ev}:id / :ts / :data        events by id (lex), by ts, and their JSON
    og:{ev}:tally:n / :last / :ex   refusal tallies by "minute|kind": count, newest ts,
                                    first refusal's JSON; og:{ev}:tally:idx by minute
    og:{ev}:cnt:<family>[:idx]      event counts by "minute|kind" (redis_counts.py)
    og:{alerts}              hash   id -> alert JSON
    og:{apikeys}             hash   id -> API key JSON; og:{apikeys}:revoked id -> ts
    og:{nl}:entries          hash   block/allow entries: pattern -> until|value; indexed
                                    by og:{nl}:block and og:{nl}:allow (redis_lists.py)

Time: every logical decision uses the caller's ``now``; Redis TTLs (wall clock) only
free memory, and are set generously past the logical expiry so that a key is never
dropped before the ``now``-based checks would stop using it.

Cross-slot work in Cluster is not atomic, and says so where it happens: the per-number
pending index is written before the verification (``find_pending`` skips ids without a
verification), and ``hit`` and ``admit`` over keys in several slots acquire step
by step and compensate on a refusal (see ``_stepwise``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from .. import admission, counters
from ..errors import ConfigError, StorageError
from ..events import Event
from ..models import (
    AttemptOutcome,
    AttemptTicket,
    Bucket,
    Channel,
    RateDecision,
    RateRule,
    Status,
    Verification,
)
from ..numberlists import KEY_PREFIX as LIST_KEY_PREFIX
from ..purpose import LOGIN
from . import redis_counts
from .base import (
    Alert,
    ApiKey,
    EventCount,
    EventQuery,
    RefusalTally,
    Store,
    allowed_decision,
)
from .redis_lists import LIST_SCRIPTS, RedisLists
from .webhooks_redis import SCRIPTS as WEBHOOK_SCRIPTS
from .webhooks_redis import RedisWebhooks

VERIFICATION_KEEP = 86_400  # seconds a verification's key outlives its (logical) expiry
INDEX_KEEP = 2 * 86_400  # the per-number index outlives each verification it lists by this
RATE_KEEP = 3_600  # seconds a rate log outlives its longest window since the last hit
FLAG_KEEP = 86_400  # seconds a flag's key outlives its ``until`` (wall clock: no ``now``)
DANGLING_AFTER = 300.0  # index ids this much older than ``now`` without a verification are gone
DEFAULT_MAX_EVENTS = 200_000
DEFAULT_EVENT_TTL_DAYS = 31
SCAN_COUNT = 1_000
BATCH = 500  # ids per HMGET / pipeline, entries per ZADD inside scripts
SOCKET_TIMEOUT = 5.0
RECORD_ONLY = 2**40  # a rule with a limit this large never refuses (as in the SQL stores)
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_POOL_TIMEOUT = 2.0
OUR_PARAMS = ("prefix", "max_events", "event_ttl_days", "max_connections", "pool_timeout")

V_FLOATS = ("created_at", "updated_at", "expires_at", "resend_available_at")
V_INTS = ("attempts", "sends", "code_length")
V_OPTIONAL = ("client_ip", "country", "locale", "service_name", "owner")
# What a code is for (purpose.py); a hash from before purposes has none: a login code.
V_BINDING = ("amount", "currency", "payee")

# -- Lua ------------------------------------------------------------------------------
# Numbers cross into Lua as strings and come back as strings: Lua formats numbers
# with 14 digits, so floats are formatted with %.17g (exact for a double) and
# timestamps from Python are stored as the strings Python sent (repr: exact).

_LUA_LIB = """
local function fmt(x) return string.format('%.17g', x) end
local function extend(key, ms)
  local t = redis.call('PTTL', key)
  if t ~= -2 and t < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
end
"""

# KEYS: verification [, number index]; ARGV: ttl_ms, index_ttl_ms, id, created_at, field, value...
CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 5, #ARGV, 100 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 99, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if KEYS[2] then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  extend(KEYS[2], ARGV[2])
end
return 1
"""

# KEYS: number index; ARGV: created_at, id, index_ttl_ms (Cluster: the index on its own)
INDEX_ADD_LUA = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
extend(KEYS[1], ARGV[3])
return 1
"""

# KEYS: verification; ARGV: max_attempts, now
RECORD_ATTEMPT_LUA = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return false end
local outcome
if redis.call('HGET', h, 'status') ~= 'pending' then
  outcome = 'not_pending'
elseif tonumber(redis.call('HGET', h, 'expires_at')) <= tonumber(ARGV[2]) then
  redis.call('HSET', h, 'status', 'expired', 'updated_at', ARGV[2])
  outcome = 'expired'
elseif tonumber(redis.call('HGET', h, 'attempts')) >= tonumber(ARGV[1]) then
  outcome = 'locked'  -- nothing counted, status kept (see Store.record_attempt)
else
  redis.call('HINCRBY', h, 'attempts', 1)
  redis.call('HSET', h, 'updated_at', ARGV[2])
  outcome = 'counted'
end
return {outcome, redis.call('HGETALL', h)}
"""

# KEYS: verification; ARGV: now, code_hash
APPROVE_LUA = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'pending' then return 0 end
if tonumber(redis.call('HGET', h, 'expires_at')) <= tonumber(ARGV[1]) then return 0 end
if redis.call('HGET', h, 'code_hash') ~= ARGV[2] then return 0 end
redis.call('HSET', h, 'status', 'approved', 'updated_at', ARGV[1])
return 1
"""

# KEYS: verification; ARGV: max_attempts, now
LOCK_LUA = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'pending' then return 0 end
if tonumber(redis.call('HGET', h, 'attempts')) < tonumber(ARGV[1]) then return 0 end
redis.call('HSET', h, 'status', 'max_attempts_reached', 'updated_at', ARGV[2])
return 1
"""

# KEYS: verification; ARGV: now, key_id, code_hash, expires_at, resend_available_at, ttl_ms
REPLACE_LUA = """
local h = KEYS[1]
local now = tonumber(ARGV[1])
if redis.call('HGET', h, 'status') ~= 'pending' then return false end
if tonumber(redis.call('HGET', h, 'expires_at')) <= now then return false end
if tonumber(redis.call('HGET', h, 'resend_available_at')) > now then return false end
redis.call('HSET', h, 'key_id', ARGV[2], 'code_hash', ARGV[3], 'expires_at', ARGV[4],
  'resend_available_at', ARGV[5], 'updated_at', ARGV[1])
redis.call('HINCRBY', h, 'sends', 1)
extend(h, ARGV[6])
return redis.call('HGETALL', h)
"""

# KEYS: verification; ARGV: to, now, from...
TRANSITION_LUA = """
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then return false end
for i = 3, #ARGV do
  if ARGV[i] == status then
    redis.call('HSET', h, 'status', ARGV[1], 'updated_at', ARGV[2])
    return redis.call('HGETALL', h)
  end
end
return false
"""

# KEYS: verification [, number index]; ARGV: bound, id. Deletes if expires_at < bound.
PURGE_V_LUA = """
local e = redis.call('HGET', KEYS[1], 'expires_at')
if not e or tonumber(e) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[2]) end
return 1
"""

# The rules part of hit and admit (in _LUA_LIB): judge(now, cost, at) reads, from
# ARGV[at + 1], nrules, then per rule (key index, limit, window, ours, enforced,
# seen key index or 0). ``ours`` is how many entries this same call already added
# to the key (Cluster); a rule not ``enforced`` (record-only) is neither counted nor
# refusing; a rule whose seen key has an entry in the rule's window is skipped:
# neither enforced nor recorded. Returns a refusal {rule index, count, oldest ts or
# ''}, or nil, the counts {0, count per rule}, the keys to record and the last ARGV
# index read. record(...) then reads per key (keep, ttl_ms): keep > 0 adds ``cost``
# entries to a key some unskipped rule uses, then drops entries older than ``keep``.
_LUA_RULES = """
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
_LUA_BUCKETS = """
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

# KEYS: flag; ARGV: value, until, ttl_ms
SET_FLAG_LUA = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'until', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: flag; ARGV: now. Deletes the flag if until <= now.
PURGE_FLAG_LUA = """
local u = redis.call('HGET', KEYS[1], 'until')
if not u or tonumber(u) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: ev:id, ev:ts, ev:data; ARGV: bound, batch. Deletes up to batch events with ts < bound.
PURGE_EVENTS_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('ZREM', KEYS[2], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
return #ids
"""

# KEYS: tally:n, tally:last, tally:ex, tally:idx; ARGV: bound, batch. Deletes up to batch
# tallies of minutes before bound.
PURGE_TALLIES_LUA = """
local fields = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #fields == 0 then return 0 end
redis.call('ZREM', KEYS[4], unpack(fields))
for k = 1, 3 do redis.call('HDEL', KEYS[k], unpack(fields)) end
return #fields
"""

# KEYS: apikeys, apikeys:revoked; ARGV: id, json, revoked_at or ''
CREATE_KEY_LUA = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
return 1
"""

# KEYS: apikeys, apikeys:revoked; ARGV: id, now
REVOKE_KEY_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""

_WITH_RULES = {"hit", "admit"}
_WITH_BUCKETS = {"admit", "credit"}
SCRIPTS = {
    name: _LUA_LIB
    + (_LUA_RULES if name in _WITH_RULES else "")
    + (_LUA_BUCKETS if name in _WITH_BUCKETS else "")
    + code
    for name, code in {
        "create": CREATE_LUA,
        "index_add": INDEX_ADD_LUA,
        "record_attempt": RECORD_ATTEMPT_LUA,
        "approve": APPROVE_LUA,
        "lock": LOCK_LUA,
        "replace": REPLACE_LUA,
        "transition": TRANSITION_LUA,
        "purge_v": PURGE_V_LUA,
        "hit": HIT_LUA,
        "admit": ADMIT_LUA,
        "credit": CREDIT_LUA,
        "give_back": GIVE_BACK_LUA,
        "release": RELEASE_LUA,
        "purge_bucket": PURGE_BUCKET_LUA,
        "set_flag": SET_FLAG_LUA,
        "purge_flag": PURGE_FLAG_LUA,
        "add_events": redis_counts.ADD_EVENTS_LUA,
        "purge_events": PURGE_EVENTS_LUA,
        "tally": redis_counts.TALLY_LUA,
        "purge_counts": redis_counts.PURGE_COUNTS_LUA,
        "purge_tallies": PURGE_TALLIES_LUA,
        "create_key": CREATE_KEY_LUA,
        "revoke_key": REVOKE_KEY_LUA,
        **LIST_SCRIPTS,
    }.items()
}


# -- plumbing -------------------------------------------------------------------------


@contextlib.contextmanager
def _storage_errors(op: str) -> Iterator[None]:
    """The one place redis-py errors become StorageError; never echoes keys or values."""
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as exc:
        raise StorageError(f"redis store: {op} failed ({type(exc).__name__})") from exc


def _ts(x: float) -> str:
    """A float as text Redis and Python both parse back to the same double."""
    return repr(float(x))


def _ms(seconds: float) -> int:
    return max(1_000, int(seconds * 1000))


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True)
class _Options:
    cluster: bool
    client_url: str  # standalone: the URL for redis-py, our parameters removed
    nodes: tuple[tuple[str, int], ...]  # cluster: startup nodes
    client_kwargs: tuple[tuple[str, str], ...]  # cluster: query parameters for redis-py
    username: str | None
    password: str | None
    prefix: str
    max_events: int
    event_ttl_days: int
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # pool size (per node in Cluster)
    pool_timeout: float = DEFAULT_POOL_TIMEOUT  # wait for a free pooled connection


def _parse_url(url: str) -> _Options:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "redis+cluster"):
        raise ConfigError(f"OTPGUARD_STORE: not a redis URL (scheme {scheme!r})")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in OUR_PARAMS}
    rest = [(k, v) for k, v in query if k not in OUR_PARAMS]
    prefix = ours.get("prefix", "og")
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigError("OTPGUARD_STORE: the redis 'prefix' must be non-empty, without braces")
    try:
        max_events = int(ours.get("max_events", DEFAULT_MAX_EVENTS))
        event_ttl_days = int(ours.get("event_ttl_days", DEFAULT_EVENT_TTL_DAYS))
    except ValueError as exc:
        raise ConfigError("OTPGUARD_STORE: max_events and event_ttl_days are integers") from exc
    if max_events < 1 or event_ttl_days < 1:
        raise ConfigError("OTPGUARD_STORE: max_events and event_ttl_days must be positive")
    pool = _pool_options(ours, cluster=scheme == "redis+cluster")
    if scheme != "redis+cluster":
        client_url = urlunsplit(parts._replace(query=urlencode(rest)))
        _check_client_options(client_url, [k for k, _ in rest])
        return _Options(
            False, client_url, (), (), None, None, prefix, max_events, event_ttl_days, *pool
        )
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)|([^:\[\]]+)", item.strip())
        if m is None:
            raise ConfigError(
                "OTPGUARD_STORE: use redis+cluster://host:port[,host:port...] ([v6]:port for IPv6)"
            )
        host = m.group(1) or m.group(3) or m.group(5)
        nodes.append((host, int(m.group(2) or m.group(4) or 6379)))
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError("OTPGUARD_STORE: Redis Cluster has database 0 only")
    return _Options(
        True, "", tuple(nodes), tuple(rest), unquote(username) or None,
        unquote(password) or None, prefix, max_events, event_ttl_days, *pool,
    )  # fmt: skip


def _pool_options(ours: dict[str, str], cluster: bool) -> tuple[int, float]:
    """``max_connections`` and ``pool_timeout``: a bounded pool, and a short wait for it."""
    try:
        size = int(ours.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        wait = float(ours.get("pool_timeout", DEFAULT_POOL_TIMEOUT))
    except ValueError as exc:
        raise ConfigError(
            "OTPGUARD_STORE: max_connections is an integer and pool_timeout a number"
        ) from exc
    if size < 1 or not 0 < wait <= 60:  # not 'inf' / 'nan' either
        raise ConfigError(
            "OTPGUARD_STORE: max_connections must be positive, pool_timeout in (0, 60] seconds"
        )
    if cluster and "pool_timeout" in ours:
        # redis-py's cluster client has no blocking pool: past max_connections per node a
        # command fails at once. Refused rather than silently ignored.
        raise ConfigError("OTPGUARD_STORE: pool_timeout applies to one Redis, not redis+cluster")
    return size, wait


def _client_option_names(scheme: str) -> set[str]:
    """The query parameters a ``redis://``/``rediss://`` URL may carry: those redis-py's
    ``from_url`` parses, a few plain strings, and (``rediss``) the TLS connection's
    ``ssl_*`` arguments. redis-py passes any other name on to the connection, which then
    fails every command with a TypeError, so it is refused here instead."""
    from redis.asyncio import connection as rc

    names = set(rc.URL_QUERY_ARGUMENT_PARSERS) | {"client_name", "username", "password"}
    if scheme == "rediss":
        names |= {n for n in inspect.signature(rc.SSLConnection).parameters if n[:4] == "ssl_"}
    return names


def _check_client_options(client_url: str, names: Sequence[str]) -> None:
    from redis.asyncio.connection import parse_url

    allowed = _client_option_names(urlsplit(client_url).scheme.lower())
    unknown = sorted({n for n in names if n not in allowed})
    if unknown:
        raise ConfigError(
            f"OTPGUARD_STORE: unknown redis URL option(s) {', '.join(unknown)}; "
            "see docs/redis.md (socket_timeout, socket_connect_timeout, ssl_cert_reqs, ...)"
        )
    try:
        parse_url(client_url)
    except ValueError as exc:  # "Invalid value for 'socket_timeout' in connection URL."
        raise ConfigError(f"OTPGUARD_STORE: {exc}") from None


def _cluster_kwargs(query: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The few redis-py options a cluster URL may carry (TLS and timeouts)."""
    out: dict[str, Any] = {}
    for key, value in query:
        if key == "ssl":
            out["ssl"] = value.lower() in ("1", "true", "yes", "on")
        elif key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            out[key] = value
        elif key in ("socket_timeout", "socket_connect_timeout"):
            try:
                out[key] = float(value)
            except ValueError:
                raise ConfigError(f"OTPGUARD_STORE: {key} must be a number of seconds") from None
        else:
            raise ConfigError(f"OTPGUARD_STORE: unsupported redis+cluster option {key!r}")
    return out


def _verification_fields(v: Verification) -> list[str]:
    fields: dict[str, str] = {
        "id": v.id,
        "to": v.to,
        "channel": Channel(v.channel).value,
        "status": Status(v.status).value,
        "key_id": v.key_id,
        "code_hash": v.code_hash,
        **{name: _ts(getattr(v, name)) for name in V_FLOATS},
        **{name: str(int(getattr(v, name))) for name in V_INTS},
    }
    fields["purpose"] = v.purpose
    for name in (*V_OPTIONAL, *V_BINDING):
        value = getattr(v, name)
        if value is not None:
            fields[name] = value
    return [item for pair in fields.items() for item in pair]


def _verification(raw: dict[str, str] | Sequence[str]) -> Verification:
    h = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=True))
    return Verification(
        id=h["id"],
        to=h["to"],
        channel=Channel(h["channel"]),
        status=Status(h["status"]),
        key_id=h["key_id"],
        code_hash=h["code_hash"],
        created_at=float(h["created_at"]),
        updated_at=float(h["updated_at"]),
        expires_at=float(h["expires_at"]),
        resend_available_at=float(h["resend_available_at"]),
        attempts=int(h["attempts"]),
        sends=int(h["sends"]),
        client_ip=h.get("client_ip"),
        country=h.get("country"),
        locale=h.get("locale"),
        code_length=int(h["code_length"]),
        service_name=h.get("service_name"),
        owner=h.get("owner"),
        purpose=h.get("purpose") or LOGIN,
        amount=h.get("amount"),
        currency=h.get("currency"),
        payee=h.get("payee"),
    )


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _event_matches(e: Event, q: EventQuery) -> bool:
    return (
        (not q.types or e.type in q.types)
        and (q.number_hash is None or e.number_hash == q.number_hash)
        and (q.client_ip is None or e.client_ip == q.client_ip)
        and (q.country is None or e.country == q.country)
        and (q.since is None or e.ts >= q.since)
        and (q.until is None or e.ts < q.until)
    )


def _enforced(r: RateRule) -> bool:
    return not r.record_only and r.limit < RECORD_ONLY


def _keep(rules: Sequence[RateRule]) -> dict[str, int]:
    """Entries are kept for the longest window hitting the key in this call (limits.py
    puts the window in the key, so a key is always hit with the same windows)."""
    keep: dict[str, int] = {}
    for r in rules:
        keep[r.key] = max(keep.get(r.key, 0), r.window)
    return keep


def _rate_keys(rules: Sequence[RateRule]) -> list[str]:
    """The distinct rate keys of one call: the rules' keys, then their seen keys."""
    keys = [r.key for r in rules] + [r.skip_if_seen for r in rules if r.skip_if_seen is not None]
    return list(dict.fromkeys(keys))


def _rule_args(rules: Sequence[RateRule], keys: list[str]) -> list[Any]:
    args: list[Any] = [len(rules)]
    for r in rules:
        seen = 0 if r.skip_if_seen is None else keys.index(r.skip_if_seen) + 1
        args += [keys.index(r.key) + 1, r.limit, r.window, 0, int(_enforced(r)), seen]
    return args


def _forget_at(b: Bucket, now: float) -> float:
    return now + admission.FORGET_AFTER_TAUS * b.tau


def _bucket_ttl(b: Bucket) -> int:
    return _ms(admission.FORGET_AFTER_TAUS * b.tau)


def _bucket_args(
    buckets: Sequence[Bucket], now: float, pressure: float | None, force: bool
) -> list[Any]:
    args: list[Any] = [len(buckets), "" if pressure is None else repr(float(pressure))]
    args.append("1" if force else "0")
    for b in buckets:
        args += [repr(float(b.base)), repr(float(b.tau)), repr(float(b.share)),
                 _bucket_ttl(b), _ts(_forget_at(b, now))]  # fmt: skip
    return args


def _bucket_refusal(b: Bucket, out: Sequence[Any]) -> RateDecision:
    level, wait, challenge = float(out[1]), float(out[2]), out[3] == 1
    return RateDecision(False, b.name, wait, int(level), challenge=challenge, key=b.key)


# -- the store --------------------------------------------------------------------------


class RedisStore(RedisWebhooks, RedisLists, Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self._opts = _parse_url(url)
        self._cluster_kwargs = _cluster_kwargs(self._opts.client_kwargs)
        # redis-py's command methods are typed ``Awaitable[T] | T`` (shared with the sync
        # client), so the client is held as Any rather than casting every call.
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        p = self._opts.prefix
        self._ev = (f"{p}:{{ev}}:id", f"{p}:{{ev}}:ts", f"{p}:{{ev}}:data")
        self._tally = tuple(f"{p}:{{ev}}:tally:{k}" for k in ("n", "last", "ex", "idx"))
        self._counts = redis_counts.count_keys(p)
        self._alerts = f"{p}:{{alerts}}"
        self._keys = (f"{p}:{{apikeys}}", f"{p}:{{apikeys}}:revoked")
        self._list_prefix = p

    def __repr__(self) -> str:
        return f"RedisStore(cluster={self._opts.cluster}, prefix={self._opts.prefix!r})"

    # -- keys -------------------------------------------------------------------------

    def _vkey(self, verification_id: str) -> str:
        return f"{self._opts.prefix}:{{v:{verification_id}}}"

    def _nkey(self, to: str) -> str:
        return f"{self._opts.prefix}:{{n:{to}}}:pending"

    def _rkey(self, key: str) -> str:
        return f"{self._opts.prefix}:{{rl:{key}}}"

    def _fkey(self, key: str) -> str:
        return f"{self._opts.prefix}:{{f:{key}}}"

    def _bkey(self, key: str) -> str:
        return f"{self._opts.prefix}:{{b:{key}}}"

    # -- plumbing -----------------------------------------------------------------------

    def _errors(self, op: str) -> contextlib.AbstractContextManager[None]:
        return _storage_errors(op)

    def _live(self, op: str) -> Any:
        if self._client is None:
            raise StorageError(f"redis store: {op} failed (store is not open)")
        return self._client

    async def _run(self, op: str, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        with _storage_errors(op):
            self._live(op)
            return await self._scripts[script](keys=list(keys), args=list(args))

    async def open(self) -> None:
        if self._client is not None:  # open() is idempotent
            return
        o = self._opts
        # One quick retry on a dropped connection (a pooled socket that died while Redis
        # restarted); no backoff: otpguard fails closed rather than waiting.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        with _storage_errors("open"):
            if o.cluster:
                kwargs: dict[str, Any] = {
                    "socket_timeout": SOCKET_TIMEOUT,
                    "socket_connect_timeout": SOCKET_TIMEOUT,
                    **self._cluster_kwargs,
                }
                client: Any = RedisCluster(
                    startup_nodes=[ClusterNode(host, port) for host, port in o.nodes],
                    username=o.username,
                    password=o.password,
                    decode_responses=True,
                    retry=Retry(NoBackoff(), 2),
                    max_connections=o.max_connections,
                    **kwargs,
                )
            else:
                # A bounded pool that makes a burst wait (up to pool_timeout) for a free
                # connection, where redis-py's default pool fails at once past its size.
                pool = aioredis.BlockingConnectionPool.from_url(
                    o.client_url,
                    max_connections=o.max_connections,
                    timeout=o.pool_timeout,
                    decode_responses=True,
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=SOCKET_TIMEOUT,
                    retry=retry,
                )
                client = aioredis.Redis.from_pool(pool)
        if o.cluster:
            # Learn the slot map before any concurrent use: redis-py's async cluster
            # client, initialised lazily by concurrent first commands, was seen handing
            # a half-connected connection to a command (tests/test_redis_store.py).
            try:
                with _storage_errors("open"):
                    await client.initialize()
            except StorageError:
                await client.aclose()
                raise
        scripts = {**SCRIPTS, **WEBHOOK_SCRIPTS}
        self._scripts = {name: client.register_script(code) for name, code in scripts.items()}
        self._client = client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with _storage_errors("close"):
                await client.aclose()

    async def health(self) -> None:
        with _storage_errors("health"):
            client = self._live("health")
            if self._opts.cluster:
                await client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await client.ping()

    async def _scan(self, op: str, pattern: str) -> AsyncIterator[str]:
        """Every key matching ``pattern``; in Cluster, on every primary."""
        with _storage_errors(op):
            client = self._live(op)
            if self._opts.cluster:
                nodes = client.get_primaries()
                for node in nodes:
                    cursor = 0
                    while True:
                        cursor, keys = await node.execute_command(
                            "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
                        )
                        for key in keys:
                            yield key
                        if int(cursor) == 0:
                            break
            else:
                async for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
                    yield key

    # -- verifications ------------------------------------------------------------------

    async def create_verification(self, v: Verification) -> None:
        lifetime = max(0.0, v.expires_at - v.created_at)
        ttl = _ms(lifetime + VERIFICATION_KEEP)
        index_ttl = _ms(lifetime + VERIFICATION_KEEP + INDEX_KEEP)
        vkey, nkey = self._vkey(v.id), self._nkey(v.to)
        args = [ttl, index_ttl, v.id, _ts(v.created_at), *_verification_fields(v)]
        if self._opts.cluster:
            # Two slots: the index first, so a verification is never invisible to
            # find_pending; an index entry without a verification is skipped there.
            await self._run("create_verification", "index_add", [nkey],
                            [_ts(v.created_at), v.id, index_ttl])  # fmt: skip
            keys = [vkey]
        else:
            keys = [vkey, nkey]
        if not await self._run("create_verification", "create", keys, args):
            raise StorageError("redis store: create_verification failed (id exists)")

    async def get_verification(self, verification_id: str) -> Verification | None:
        with _storage_errors("get_verification"):
            raw = await self._live("get_verification").hgetall(self._vkey(verification_id))
        return _verification(raw) if raw else None

    async def find_pending(self, to: str, now: float) -> Verification | None:
        found = await self._pending(to, now, None, 1, "find_pending")
        return found[0] if found else None

    async def list_pending(
        self, to: str, now: float, *, owner: str | None, limit: int
    ) -> list[Verification]:
        return await self._pending(to, now, owner, limit, "list_pending")

    async def _pending(
        self, to: str, now: float, owner: str | None, limit: int, op: str
    ) -> list[Verification]:
        nkey = self._nkey(to)
        found: list[Verification] = []
        if limit <= 0:
            return found
        with _storage_errors(op):
            client = self._live(op)
            # Newest first; equal created_at in descending id order, like the SQL stores.
            entries: list[tuple[str, float]] = await client.zrevrange(nkey, 0, -1, withscores=True)
            dangling: list[str] = []
            for i in range(0, len(entries), BATCH):
                chunk = entries[i : i + BATCH]
                pipe = client.pipeline(transaction=False)
                for vid, _ in chunk:
                    pipe.hgetall(self._vkey(vid))
                rows = await pipe.execute()
                for (vid, created_at), raw in zip(chunk, rows, strict=True):
                    if not raw:
                        # Gone (TTL or purge). A young one may be a create in flight.
                        if created_at < now - DANGLING_AFTER:
                            dangling.append(vid)
                        continue
                    v = _verification(raw)
                    if (
                        v.status is Status.PENDING
                        and v.expires_at > now
                        and (owner is None or v.owner in (owner, None))
                    ):
                        found.append(v)
                        if len(found) >= limit:
                            break
                if len(found) >= limit:
                    break
            if dangling:
                await client.zrem(nkey, *dangling)
        return found

    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        out = await self._run(
            "record_attempt", "record_attempt", [self._vkey(verification_id)],
            [max_attempts, _ts(now)],
        )  # fmt: skip
        if out is None:
            return None
        return AttemptTicket(AttemptOutcome(out[0]), _verification(out[1]))

    async def approve(self, verification_id: str, now: float, *, code_hash: str) -> bool:
        done = await self._run(
            "approve", "approve", [self._vkey(verification_id)], [_ts(now), code_hash]
        )
        return bool(done)

    async def lock_if_exhausted(self, verification_id: str, max_attempts: int, now: float) -> bool:
        done = await self._run(
            "lock_if_exhausted", "lock", [self._vkey(verification_id)], [max_attempts, _ts(now)]
        )
        return bool(done)

    async def replace_code(
        self,
        verification_id: str,
        key_id: str,
        code_hash: str,
        now: float,
        expires_at: float,
        resend_available_at: float,
    ) -> Verification | None:
        ttl = _ms(max(0.0, expires_at - now) + VERIFICATION_KEEP)
        out = await self._run(
            "replace_code", "replace", [self._vkey(verification_id)],
            [_ts(now), key_id, code_hash, _ts(expires_at), _ts(resend_available_at), ttl],
        )  # fmt: skip
        return _verification(out) if out else None

    async def transition(
        self, verification_id: str, from_statuses: Sequence[Status], to: Status, now: float
    ) -> Verification | None:
        args = [Status(to).value, _ts(now), *(Status(s).value for s in from_statuses)]
        out = await self._run("transition", "transition", [self._vkey(verification_id)], args)
        return _verification(out) if out else None

    # -- rate windows -----------------------------------------------------------------------

    async def hit(
        self, rules: Sequence[RateRule], now: float, cost: int = 1, record: bool = True
    ) -> RateDecision:
        if cost < 0:
            raise ValueError("cost must be >= 0")
        if not rules:
            return RateDecision(allowed=True)
        rules = tuple(rules)
        keep = _keep(rules)
        nonce = os.urandom(8).hex()
        keys = _rate_keys(rules)
        if not self._one_slot("hit", [self._rkey(k) for k in keys]):
            return await self._stepwise(rules, (), now, cost, record, nonce)
        args: list[Any] = [_ts(now), cost, nonce, *_rule_args(rules, keys)]
        for key in keys:
            args += [keep.get(key, 0) if record else 0, _ms(keep.get(key, 0) + RATE_KEEP)]
        out = await self._run("hit", "hit", [self._rkey(k) for k in keys], args)
        if out[0] != 0:
            return self._refusal(rules[out[0] - 1], out[1], out[2], now)
        return allowed_decision(rules, [int(n) for n in out[1:]], cost if record else 0)

    async def release(self, keys: Sequence[str], at: float, cost: int = 1) -> None:
        rkeys = [self._rkey(k) for k in dict.fromkeys(keys)]
        if not rkeys or cost <= 0:
            return
        # Cluster: key by key, each atomic (a release only lowers counts).
        groups = [rkeys] if self._one_slot("release", rkeys) else [[k] for k in rkeys]
        for group in groups:
            await self._run("release", "release", group, [_ts(at), cost])

    async def admit(
        self,
        rules: Sequence[RateRule],
        buckets: Sequence[Bucket],
        now: float,
        *,
        pressure: float | None = None,
        force: bool = False,
    ) -> RateDecision:
        rules, buckets = tuple(rules), tuple(buckets)
        keep = _keep(rules)
        nonce = os.urandom(8).hex()
        keys = _rate_keys(rules)
        redis_keys = [self._rkey(k) for k in keys] + [self._bkey(b.key) for b in buckets]
        if not self._one_slot("admit", redis_keys):
            return await self._stepwise(rules, buckets, now, 1, True, nonce, pressure, force)
        args: list[Any] = [_ts(now), nonce, len(keys), *_rule_args(rules, keys)]
        for key in keys:
            args += [keep.get(key, 0), _ms(keep.get(key, 0) + RATE_KEEP)]
        args += _bucket_args(buckets, now, pressure, force)
        out = await self._run("admit", "admit", redis_keys, args)
        if out[0] > 0:
            return self._refusal(rules[out[0] - 1], out[1], out[2], now)
        if out[0] < 0:
            return _bucket_refusal(buckets[-out[0] - 1], out)
        return allowed_decision(rules, [int(n) for n in out[1:]], 1)

    async def credit(self, buckets: Sequence[Bucket], refund: int, now: float) -> None:
        buckets = tuple(buckets)
        if not buckets:
            return
        # Cluster: bucket by bucket, each one atomic (see docs/redis.md).
        groups = (
            [buckets]
            if self._one_slot("credit", [self._bkey(b.key) for b in buckets])
            else [(b,) for b in buckets]
        )
        for group in groups:
            args: list[Any] = [_ts(now), refund]
            for b in group:
                args += [repr(float(b.tau)), _bucket_ttl(b), _ts(_forget_at(b, now))]
            await self._run("credit", "credit", [self._bkey(b.key) for b in group], args)

    def _one_slot(self, op: str, keys: Sequence[str]) -> bool:
        """Whether one script may touch every key (always, outside Cluster)."""
        if not self._opts.cluster or len(keys) <= 1:
            return True
        client = self._live(op)
        return len({client.keyslot(k) for k in keys}) == 1

    async def _stepwise(
        self,
        rules: tuple[RateRule, ...],
        buckets: tuple[Bucket, ...],
        now: float,
        cost: int,
        record: bool,
        nonce: str,
        pressure: float | None = None,
        force: bool = False,
    ) -> RateDecision:
        """Keys in several Cluster slots: acquire step by step, compensate on a refusal.

        First the ``skip_if_seen`` keys are read (one pipelined round trip, before this
        call adds anything). Then each enforced rule's check-and-add is one atomic
        script on its key, then each bucket's check-and-raise, and last the record-only
        rules (they never refuse, so what they add is never taken back). When a rule or
        bucket refuses, what this call added under the earlier ones is removed again.
        No rule or bucket ever admits more than its limit; between the add and the
        removal (one round trip per step) other callers see those keys higher than
        they will end up and may be refused by them: errors refuse more, never admit
        more. If this process dies (or Redis fails) before the removal, the entries
        stay until they leave the window (the bucket levels until they decay).
        """
        keep = _keep(rules)
        skipped = await self._seen(rules, now)
        active = [i for i in range(len(rules)) if i not in skipped]
        enforced = [i for i in active if _enforced(rules[i])]
        record_only = [i for i in active if not _enforced(rules[i])]
        counts = [0] * len(rules)
        added: list[str] = []  # rate keys this call added entries to
        touched: set[str] = set()
        taken: list[Bucket] = []  # buckets this call raised
        members = [f"{_ts(now)}:{nonce}:{i}" for i in range(1, cost + 1)]
        try:
            for i in enforced:
                r = rules[i]
                fresh = r.key not in touched
                ours = cost if (record and not fresh and r.key in added) else 0
                add = keep[r.key] if (record and fresh) else 0
                args = [_ts(now), cost, nonce, 1, 1, r.limit, r.window, ours, 1, 0,
                        add, _ms(keep[r.key] + RATE_KEEP)]  # fmt: skip
                out = await self._run("hit", "hit", [self._rkey(r.key)], args)
                touched.add(r.key)
                if out[0] != 0:
                    await self._compensate(added, members, taken, now)
                    added, taken = [], []
                    return self._refusal(r, out[1], out[2], now)
                if add and cost:
                    added.append(r.key)
                counts[i] = int(out[1])
            for b in buckets:
                args = [_ts(now), nonce, 0, 0, *_bucket_args((b,), now, pressure, force)]
                out = await self._run("admit", "admit", [self._bkey(b.key)], args)
                if out[0] != 0:
                    await self._compensate(added, members, taken, now)
                    added, taken = [], []
                    return _bucket_refusal(b, out)
                taken.append(b)
            for i in record_only:
                r = rules[i]
                if r.key in touched:
                    continue  # one entry per key, even when several rules share a key
                touched.add(r.key)
                if record and cost:
                    args = [_ts(now), cost, nonce, 1, 1, r.limit, r.window, 0, 0, 0,
                            keep[r.key], _ms(keep[r.key] + RATE_KEEP)]  # fmt: skip
                    await self._run("hit", "hit", [self._rkey(r.key)], args)
                    added.append(r.key)
        except BaseException:
            if added or taken:
                with contextlib.suppress(StorageError):
                    await self._compensate(added, members, taken, now)
            raise
        if buckets and not rules:
            return RateDecision(True)
        return allowed_decision(rules, counts, cost if record else 0)

    async def _seen(self, rules: Sequence[RateRule], now: float) -> set[int]:
        """The rules whose ``skip_if_seen`` key has an entry in the rule's window."""
        seen = [(i, r) for i, r in enumerate(rules) if r.skip_if_seen is not None]
        if not seen:
            return set()
        with _storage_errors("hit"):
            pipe = self._live("hit").pipeline(transaction=False)
            for _, r in seen:
                pipe.zcount(self._rkey(str(r.skip_if_seen)), f"({_ts(now - r.window)}", "+inf")
            found = await pipe.execute()
        return {i for (i, _), n in zip(seen, found, strict=True) if int(n) > 0}

    async def _compensate(
        self, keys: Sequence[str], members: Sequence[str], buckets: Sequence[Bucket], now: float
    ) -> None:
        for key in keys:
            with _storage_errors("hit"):
                for i in range(0, len(members), BATCH):
                    await self._live("hit").zrem(self._rkey(key), *members[i : i + BATCH])
        for b in buckets:
            await self._run(
                "admit", "give_back", [self._bkey(b.key)], [_ts(now), repr(float(b.tau))]
            )

    @staticmethod
    def _refusal(r: RateRule, n: Any, oldest: Any, now: float) -> RateDecision:
        # Room appears once the (n + cost - limit)-th oldest entry leaves; when cost >
        # limit it never fits and a full window is the bound (as in the SQL stores).
        retry_after = float(r.window) if oldest in ("", None) else float(oldest) + r.window - now
        return RateDecision(False, r.name, retry_after, int(n), key=r.key)

    async def count(self, key: str, window: int, now: float) -> int:
        with _storage_errors("count"):
            client = self._live("count")
            n: int = await client.zcount(self._rkey(key), f"({_ts(now - window)}", "+inf")
        return n

    async def counts(self, queries: Sequence[tuple[str, int]], now: float) -> list[int]:
        """Several counts in one pipelined round trip (not a snapshot across keys)."""
        if not queries:
            return []
        with _storage_errors("counts"):
            pipe = self._live("counts").pipeline(transaction=False)
            for key, window in queries:
                pipe.zcount(self._rkey(key), f"({_ts(now - window)}", "+inf")
            return [int(n) for n in await pipe.execute()]

    # -- flags ------------------------------------------------------------------------------

    async def set_flag(self, key: str, value: str, until: float) -> None:
        if key.startswith(LIST_KEY_PREFIX):
            raise ValueError("numlist: flags are written by put_list_entry (redis_lists.py)")
        # No ``now`` here: the TTL runs from the wall clock, a day past ``until``;
        # get_flag decides from the caller's ``now`` alone.
        ttl = _ms(max(0.0, until - time.time()) + FLAG_KEEP)
        await self._run("set_flag", "set_flag", [self._fkey(key)], [value, _ts(until), ttl])

    async def get_flag(self, key: str, now: float) -> str | None:
        if key.startswith(LIST_KEY_PREFIX):
            return (await self.get_flags([key], now)).get(key)
        with _storage_errors("get_flag"):
            value, until = await self._live("get_flag").hmget(self._fkey(key), "value", "until")
        if value is None or until is None or float(until) <= now:
            return None
        return str(value)

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        """Several flags in one pipelined round trip; the ``numlist:`` ones (block and
        allow entries) as one HMGET of their hash (redis_lists.py)."""
        if not keys:
            return {}
        listed = [k for k in keys if k.startswith(LIST_KEY_PREFIX)]
        plain = [k for k in keys if not k.startswith(LIST_KEY_PREFIX)]
        with _storage_errors("get_flags"):
            pipe = self._live("get_flags").pipeline(transaction=False)
            for key in plain:
                pipe.hmget(self._fkey(key), "value", "until")
            if listed:
                self._queue_list_read(pipe, listed)
            rows = await pipe.execute()
        out = {
            key: str(value)
            for key, (value, until) in zip(plain, rows, strict=False)
            if value is not None and until is not None and float(until) > now
        }
        if listed:
            out.update(self._list_flags(listed, rows[-1], now))
        return out

    # -- events -----------------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        ttl = _ms(self._opts.event_ttl_days * 86_400.0)
        args: list[Any] = [self._opts.max_events, ttl, len(events)]
        for e in events:
            args += [e.id, _ts(e.ts), e.to_json()]
        args += redis_counts.quads(counters.of_events(events))
        await self._run("add_events", "add_events", [*self._ev, *self._counts], args)

    async def list_events(self, query: EventQuery) -> list[Event]:
        """Newest id first. Filters run here, in Python, over a scan of ids from the
        cursor down: at most ``max_events`` ids (the cap) are read for one call."""
        limit = max(0, query.limit)
        out: list[Event] = []
        upper = "+" if query.before_id is None else f"({query.before_id}"
        with _storage_errors("list_events"):
            client = self._live("list_events")
            while len(out) < limit:
                ids: list[str] = await client.zrevrangebylex(self._ev[0], upper, "-", 0, BATCH)
                if not ids:
                    break
                for raw in await client.hmget(self._ev[2], ids):
                    if raw is None:  # dropped between the two reads
                        continue
                    e = Event.from_dict(json.loads(raw))
                    if _event_matches(e, query):
                        out.append(e)
                        if len(out) == limit:
                            break
                upper = f"({ids[-1]}"
        return out

    async def tally_refusal(self, minute: int, key: str, example: Event) -> int:
        args = [f"{minute}|{key}", minute, _ts(example.ts), example.to_json(),
                self._opts.max_events, _ms(self._opts.event_ttl_days * 86_400.0),
                *redis_counts.quads(counters.increments([(minute, example)]))]  # fmt: skip
        keys = [*self._tally, *self._counts]
        return int(await self._run("tally_refusal", "tally", keys, args))

    async def list_refusal_tallies(self, since: float, until: float) -> list[RefusalTally]:
        out: list[RefusalTally] = []
        with _storage_errors("list_refusal_tallies"):
            client = self._live("list_refusal_tallies")
            fields: list[str] = await client.zrangebyscore(
                self._tally[3], f"({since - 60}", f"({until}"
            )
            for i in range(0, len(fields), BATCH):
                batch = fields[i : i + BATCH]
                counts = await client.hmget(self._tally[0], batch)
                lasts = await client.hmget(self._tally[1], batch)
                examples = await client.hmget(self._tally[2], batch)
                for name, n, last, ex in zip(batch, counts, lasts, examples, strict=True):
                    if n is None or last is None or ex is None:  # purged between the reads
                        continue
                    minute, _, key = name.partition("|")
                    out.append(RefusalTally(int(minute), key, int(n), float(last),
                                            Event.from_dict(json.loads(ex))))  # fmt: skip
        return out

    async def list_event_counts(
        self, since: float, until: float, families: Sequence[str]
    ) -> list[EventCount]:
        out: list[EventCount] = []
        with _storage_errors("list_event_counts"):
            client = self._live("list_event_counts")
            for family in families:
                out += await redis_counts.read_counts(client, self._counts, since, until, family)
        return out

    # -- alerts -----------------------------------------------------------------------------

    async def put_alert(self, alert: Alert) -> None:
        with _storage_errors("put_alert"):
            await self._live("put_alert").hset(self._alerts, alert.id, _json(asdict(alert)))

    async def list_alerts(
        self, since: float | None = None, status: str | None = None
    ) -> list[Alert]:
        with _storage_errors("list_alerts"):
            raw: dict[str, str] = await self._live("list_alerts").hgetall(self._alerts)
        alerts = [Alert(**json.loads(value)) for value in raw.values()]
        alerts = [
            a
            for a in alerts
            if (since is None or a.updated_at >= since) and (status is None or a.status == status)
        ]
        alerts.sort(key=lambda a: (a.updated_at, a.id), reverse=True)
        return alerts

    # -- API keys ---------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey) -> None:
        data = _json({"id": key.id, "name": key.name, "key_hash": key.key_hash,
                      "scopes": list(key.scopes), "created_at": key.created_at})  # fmt: skip
        revoked = "" if key.revoked_at is None else _ts(key.revoked_at)
        if not await self._run("create_api_key", "create_key", self._keys, [key.id, data, revoked]):
            raise StorageError("redis store: create_api_key failed (id exists)")

    @staticmethod
    def _api_key(raw: str, revoked_at: str | None) -> ApiKey:
        d = json.loads(raw)
        return ApiKey(
            id=d["id"],
            name=d["name"],
            key_hash=d["key_hash"],
            scopes=tuple(d["scopes"]),
            created_at=d["created_at"],
            revoked_at=None if revoked_at is None else float(revoked_at),
        )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        with _storage_errors("get_api_key"):
            pipe = self._live("get_api_key").pipeline(transaction=False)
            pipe.hget(self._keys[0], key_id)
            pipe.hget(self._keys[1], key_id)
            raw, revoked = await pipe.execute()
        return None if raw is None else self._api_key(raw, revoked)

    async def list_api_keys(self) -> list[ApiKey]:
        with _storage_errors("list_api_keys"):
            pipe = self._live("list_api_keys").pipeline(transaction=False)
            pipe.hgetall(self._keys[0])
            pipe.hgetall(self._keys[1])
            raw, revoked = await pipe.execute()
        keys = [self._api_key(value, revoked.get(key_id)) for key_id, value in raw.items()]
        keys.sort(key=lambda k: (k.created_at, k.id))
        return keys

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        done = await self._run("revoke_api_key", "revoke_key", self._keys, [key_id, _ts(now)])
        return bool(done)

    # -- maintenance --------------------------------------------------------------------------

    async def purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        """TTLs free memory on their own; this removes what is logically stale by ``now``
        (as the SQL stores do), scanning the key space: verifications, rate entries and
        flags by SCAN over every primary, events through their time index."""
        p = _escape_glob(self._opts.prefix)
        total = 0
        bound = _ts(now - verification_grace)
        async for vkey in self._scan("purge", f"{p}:{{v:*}}"):
            with _storage_errors("purge"):
                to, vid = await self._live("purge").hmget(vkey, "to", "id")
            if to is None or vid is None:
                continue
            nkey = self._nkey(to)
            removed = await self._run(
                "purge", "purge_v", [vkey] if self._opts.cluster else [vkey, nkey], [bound, vid]
            )
            if removed and self._opts.cluster:
                with _storage_errors("purge"):
                    await self._live("purge").zrem(nkey, vid)
            total += int(removed)
        rate_bound = f"({_ts(now - rate_horizon)}"
        async for rkey in self._scan("purge", f"{p}:{{rl:*}}"):
            with _storage_errors("purge"):
                total += int(await self._live("purge").zremrangebyscore(rkey, "-inf", rate_bound))
        async for fkey in self._scan("purge", f"{p}:{{f:*}}"):
            total += int(await self._run("purge", "purge_flag", [fkey], [_ts(now)]))
        async for bkey in self._scan("purge", f"{p}:{{b:*}}"):
            total += int(await self._run("purge", "purge_bucket", [bkey], [_ts(now)]))
        total += await self._purge_lists(now)
        return total + await self._purge_events(now, event_horizon)

    async def _purge_events(self, now: float, event_horizon: float) -> int:
        total = 0
        for script, keys, bound in (
            ("purge_events", self._ev, now - event_horizon),
            ("purge_tallies", self._tally, now - event_horizon - 60),
            *(("purge_counts", redis_counts.family_keys(self._counts, f),
               now - event_horizon - 60) for f in counters.FAMILIES),
        ):  # fmt: skip
            while True:
                n = int(await self._run("purge", script, keys, [_ts(bound), BATCH]))
                total += n if script != "purge_counts" else 0  # sums of events, not data
                if n < BATCH:
                    break
        return total

    async def scheduled_purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        """Verifications, rate logs and flags expire by TTL; a SCAN of every key once a
        minute would cost more than it frees. Only old events go (through their index),
        and expired block and allow entries (through theirs: they have no TTL)."""
        return await self._purge_events(now, event_horizon) + await self._purge_lists(now)

    async def dump(self) -> str:
        """Every key with the store's prefix and its value, as text (SCAN on every primary)."""
        keys = sorted({k async for k in self._scan("dump", f"{_escape_glob(self._opts.prefix)}:*")})
        lines: list[str] = []
        with _storage_errors("dump"):
            client = self._live("dump")
            for key in keys:
                kind = await client.type(key)
                lines.append(f"== {key} ({kind})")
                if kind == "hash":
                    items = (await client.hgetall(key)).items()
                    lines.extend(f"{field}\t{value}" for field, value in sorted(items))
                elif kind == "zset":
                    entries = await client.zrange(key, 0, -1, withscores=True)
                    lines.extend(f"{member}\t{score!r}" for member, score in entries)
                elif kind == "string":
                    lines.append(str(await client.get(key)))
        return "\n".join(lines) + "\n"
