"""The Redis store's Lua scripts, as data: verifications, flags, events, API keys.

Each operation of ``RedisStore`` that writes is one of these scripts, run with EVALSHA
(redis-py's ``Script`` caches the SHA and reloads the script after a restart), so it
is atomic: every key a script touches shares one hash tag (one slot in Cluster). The
rate-window and bucket scripts are in ``redis_lua_rates.py``; the event counts',
the lists' and the webhooks' beside the code that calls them.

Numbers cross into Lua as strings and come back as strings: Lua formats numbers
with 14 digits, so floats are formatted with %.17g (exact for a double) and
timestamps from Python are stored as the strings Python sent (repr: exact).
"""

from __future__ import annotations

from . import redis_counts


def ts(x: float) -> str:
    """A float as text Redis and Python both parse back to the same double."""
    return repr(float(x))


def ms(seconds: float) -> int:
    """A TTL in milliseconds, at least a second."""
    return max(1_000, int(seconds * 1000))


# Prepended to every script of this module and redis_lua_rates.py.
LIB = """
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

# Store.record_attempt on an existing verification h (also open_check's last step).
ATTEMPT_FUNCTION = """
local function attempt(h, max_attempts, now_s)
  local outcome
  if redis.call('HGET', h, 'status') ~= 'pending' then
    outcome = 'not_pending'
  elseif tonumber(redis.call('HGET', h, 'expires_at')) <= tonumber(now_s) then
    redis.call('HSET', h, 'status', 'expired', 'updated_at', now_s)
    outcome = 'expired'
  elseif tonumber(redis.call('HGET', h, 'attempts')) >= tonumber(max_attempts) then
    outcome = 'locked'  -- nothing counted, status kept (see Store.record_attempt)
  else
    redis.call('HINCRBY', h, 'attempts', 1)
    redis.call('HSET', h, 'updated_at', now_s)
    outcome = 'counted'
  end
  return {outcome, redis.call('HGETALL', h)}
end
"""

# KEYS: verification; ARGV: max_attempts, now
RECORD_ATTEMPT_LUA = (
    ATTEMPT_FUNCTION
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return attempt(KEYS[1], ARGV[1], ARGV[2])
"""
)

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

# KEYS: verification; ARGV: now, key_id, code_hash, expires_at, resend_available_at, ttl_ms,
# the tag the resend read (refused when the stored one differs)
REPLACE_LUA = """
local h = KEYS[1]
local now = tonumber(ARGV[1])
if redis.call('HGET', h, 'status') ~= 'pending' then return false end
if tonumber(redis.call('HGET', h, 'expires_at')) <= now then return false end
if tonumber(redis.call('HGET', h, 'resend_available_at')) > now then return false end
if redis.call('HGET', h, 'code_hash') ~= ARGV[7] then return false end
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

SCRIPTS = {
    name: LIB + code
    for name, code in {
        "create": CREATE_LUA,
        "index_add": INDEX_ADD_LUA,
        "record_attempt": RECORD_ATTEMPT_LUA,
        "approve": APPROVE_LUA,
        "lock": LOCK_LUA,
        "replace": REPLACE_LUA,
        "transition": TRANSITION_LUA,
        "purge_v": PURGE_V_LUA,
        "set_flag": SET_FLAG_LUA,
        "purge_flag": PURGE_FLAG_LUA,
        "add_events": redis_counts.ADD_EVENTS_LUA,
        "purge_events": PURGE_EVENTS_LUA,
        "tally": redis_counts.TALLY_LUA,
        "purge_counts": redis_counts.PURGE_COUNTS_LUA,
        "purge_tallies": PURGE_TALLIES_LUA,
        "create_key": CREATE_KEY_LUA,
        "revoke_key": REVOKE_KEY_LUA,
    }.items()
}
