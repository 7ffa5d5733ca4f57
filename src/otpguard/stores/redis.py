"""The Redis store: one Redis, or a Redis Cluster, shared by every otpguard worker.

URLs (``docs/redis.md`` has the details)::

    redis://[[user]:password@]host:6379/0       one Redis
    rediss://...                                 the same over TLS
    redis+cluster://host:7000[,host:7001...]    Redis Cluster (database 0 only)

with optional query parameters ``prefix`` (key prefix, default ``og``), ``max_events``
(cap on stored events) and ``event_ttl_days``; other query parameters go to redis-py.

Every operation is one Lua script run with EVALSHA (redis-py's ``Script`` caches the
SHA and reloads the script after a restart) or one read. Keys are laid out for Redis
Cluster: a hash tag puts all keys one script touches into one slot::

    og:{v:<id>}              hash   one verification (TTL: lifetime + VERIFICATION_KEEP)
    og:{n:<e164>}:pending    zset   ids of that number's verifications by created_at
    og:{rl:<key>}            zset   sliding log of one rate key, score = ts
    og:{f:<key>}             hash   one flag: value, until
    og:{ev}:id / :ts / :data        events by id (lex), by ts, and their JSON
    og:{alerts}              hash   id -> alert JSON
    og:{apikeys}             hash   id -> API key JSON; og:{apikeys}:revoked id -> ts

Time: every logical decision uses the caller's ``now``; Redis TTLs (wall clock) only
free memory, and are set generously past the logical expiry so that a key is never
dropped before the ``now``-based checks would stop using it.

Cross-slot work in Cluster is not atomic, and says so where it happens: the per-number
pending index is written before the verification (``find_pending`` skips ids without a
verification), and ``hit`` over rules in several slots acquires rule by rule and
compensates on a refusal (see ``_hit_cluster``).
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

from ..errors import ConfigError, StorageError
from ..events import Event
from ..models import (
    AttemptOutcome,
    AttemptTicket,
    Channel,
    RateDecision,
    RateRule,
    Status,
    Verification,
)
from .base import Alert, ApiKey, EventQuery, Store

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
OUR_PARAMS = ("prefix", "max_events", "event_ttl_days")

V_FLOATS = ("created_at", "updated_at", "expires_at", "resend_available_at")
V_INTS = ("attempts", "sends", "code_length")
V_OPTIONAL = ("client_ip", "country", "locale", "service_name")

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

# KEYS: verification; ARGV: now
APPROVE_LUA = """
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'pending' then return 0 end
if tonumber(redis.call('HGET', h, 'expires_at')) <= tonumber(ARGV[1]) then return 0 end
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

# The sliding-log check of Store.hit. KEYS: distinct rate logs.
# ARGV: now, cost, nonce, nrules, then per rule (key index, limit, window, ours),
# then per key (keep, ttl_ms): keep > 0 adds ``cost`` entries to that key when every
# rule passes, then drops entries older than ``keep`` seconds.
# ``ours`` is how many entries this same hit already added to the key (Cluster).
# Returns {0, count per rule} when allowed, {rule index, count, oldest ts or ''} if not.
HIT_LUA = """
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local nrules = tonumber(ARGV[4])
local counts = {0}
for i = 1, nrules do
  local b = 4 + (i - 1) * 4
  local key = KEYS[tonumber(ARGV[b + 1])]
  local limit, window = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local start = '(' .. fmt(now - window)
  local n = redis.call('ZCOUNT', key, start, '+inf') - tonumber(ARGV[b + 4])
  if n + cost > limit then
    local must_leave = n + cost - limit
    local oldest = ''
    if must_leave <= n then
      oldest = redis.call('ZRANGEBYSCORE', key, start, '+inf', 'WITHSCORES',
        'LIMIT', must_leave - 1, 1)[2]
    end
    return {i, n, oldest}
  end
  counts[i + 1] = n
end
if cost > 0 then
  local b = 4 + nrules * 4
  for j = 1, #KEYS do
    local keep = tonumber(ARGV[b + (j - 1) * 2 + 1])
    if keep > 0 then
      local batch = {}
      for i = 1, cost do
        batch[#batch + 1] = ARGV[1]
        batch[#batch + 1] = ARGV[1] .. ':' .. ARGV[3] .. ':' .. i
        if #batch >= 1000 or i == cost then
          redis.call('ZADD', KEYS[j], unpack(batch))
          batch = {}
        end
      end
      redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', fmt(now - keep))
      extend(KEYS[j], ARGV[b + (j - 1) * 2 + 2])
    end
  end
end
return counts
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

# KEYS: ev:id, ev:ts, ev:data; ARGV: max_events, ttl_ms, then (id, ts, json) triples.
ADD_EVENTS_LUA = """
for i = 3, #ARGV, 3 do
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
    name: _LUA_LIB + code
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
        "set_flag": SET_FLAG_LUA,
        "purge_flag": PURGE_FLAG_LUA,
        "add_events": ADD_EVENTS_LUA,
        "purge_events": PURGE_EVENTS_LUA,
        "create_key": CREATE_KEY_LUA,
        "revoke_key": REVOKE_KEY_LUA,
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
    if scheme != "redis+cluster":
        client_url = urlunsplit(parts._replace(query=urlencode(rest)))
        _check_client_options(client_url, [k for k, _ in rest])
        return _Options(False, client_url, (), (), None, None, prefix, max_events, event_ttl_days)
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
        unquote(password) or None, prefix, max_events, event_ttl_days,
    )  # fmt: skip


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
    for name in V_OPTIONAL:
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


# -- the store --------------------------------------------------------------------------


class RedisStore(Store):
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
        self._alerts = f"{p}:{{alerts}}"
        self._keys = (f"{p}:{{apikeys}}", f"{p}:{{apikeys}}:revoked")

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

    # -- plumbing -----------------------------------------------------------------------

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
                    **kwargs,
                )
            else:
                client = aioredis.from_url(
                    o.client_url,
                    decode_responses=True,
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=SOCKET_TIMEOUT,
                    retry=retry,
                )
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
        self._scripts = {name: client.register_script(code) for name, code in SCRIPTS.items()}
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
        nkey = self._nkey(to)
        with _storage_errors("find_pending"):
            client = self._live("find_pending")
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
                    if v.status is Status.PENDING and v.expires_at > now:
                        return v
            if dangling:
                await client.zrem(nkey, *dangling)
        return None

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

    async def approve(self, verification_id: str, now: float) -> bool:
        done = await self._run("approve", "approve", [self._vkey(verification_id)], [_ts(now)])
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
        # Entries are kept for the longest window hitting the key in this call (limits.py
        # puts the window in the key, so a key is always hit with the same windows).
        keep: dict[str, int] = {}
        for r in rules:
            keep[r.key] = max(keep.get(r.key, 0), r.window)
        nonce = os.urandom(8).hex()
        if self._opts.cluster and len(keep) > 1:
            return await self._hit_cluster(rules, now, cost, record, keep, nonce)
        keys = list(keep)
        args: list[Any] = [_ts(now), cost, nonce, len(rules)]
        for r in rules:
            args += [keys.index(r.key) + 1, r.limit, r.window, 0]
        for key in keys:
            args += [keep[key] if record else 0, _ms(keep[key] + RATE_KEEP)]
        out = await self._run("hit", "hit", [self._rkey(k) for k in keys], args)
        if out[0] != 0:
            return self._refusal(rules[out[0] - 1], out[1], out[2], now)
        after = [int(n) + (cost if record else 0) for n in out[1:]]
        return self._allowed(rules, after)

    async def _hit_cluster(
        self,
        rules: tuple[RateRule, ...],
        now: float,
        cost: int,
        record: bool,
        keep: dict[str, int],
        nonce: str,
    ) -> RateDecision:
        """Rules in several slots: acquire rule by rule, compensate on a refusal.

        Each rule's check-and-add is one atomic script on its key, so no rule ever
        admits more than its limit. When rule *i* refuses, the entries this call added
        under rules 1..i-1 are removed again. Between the add and the removal (one
        round trip per rule) other callers see those keys ``cost`` higher than they
        will end up, and may be refused by them: the window errs towards refusing,
        never towards admitting. If this process dies (or Redis fails) before the
        removal, the entries stay until they leave the window.
        """
        added: list[str] = []
        touched: set[str] = set()
        after: list[int] = []
        members = [f"{_ts(now)}:{nonce}:{i}" for i in range(1, cost + 1)]
        try:
            for r in rules:
                fresh = r.key not in touched
                ours = cost if (record and not fresh and r.key in added) else 0
                add = keep[r.key] if (record and fresh) else 0
                args = [_ts(now), cost, nonce, 1, 1, r.limit, r.window, ours,
                        add, _ms(keep[r.key] + RATE_KEEP)]  # fmt: skip
                out = await self._run("hit", "hit", [self._rkey(r.key)], args)
                touched.add(r.key)
                if out[0] != 0:
                    await self._compensate(added, members)
                    added = []
                    return self._refusal(r, out[1], out[2], now)
                if add and cost:
                    added.append(r.key)
                after.append(int(out[1]) + (cost if record else 0))
        except BaseException:
            if added:
                with contextlib.suppress(StorageError):
                    await self._compensate(added, members)
            raise
        return self._allowed(rules, after)

    async def _compensate(self, keys: Sequence[str], members: Sequence[str]) -> None:
        for key in keys:
            with _storage_errors("hit"):
                for i in range(0, len(members), BATCH):
                    await self._live("hit").zrem(self._rkey(key), *members[i : i + BATCH])

    @staticmethod
    def _refusal(r: RateRule, n: Any, oldest: Any, now: float) -> RateDecision:
        # Room appears once the (n + cost - limit)-th oldest entry leaves; when cost >
        # limit it never fits and a full window is the bound (as in the SQL stores).
        retry_after = float(r.window) if oldest in ("", None) else float(oldest) + r.window - now
        return RateDecision(False, r.name, retry_after, int(n))

    @staticmethod
    def _allowed(rules: Sequence[RateRule], after: Sequence[int]) -> RateDecision:
        fullest = max(
            range(len(rules)),
            key=lambda i: (after[i] / rules[i].limit if rules[i].limit else float("inf"), -i),
        )
        return RateDecision(True, None, 0.0, after[fullest])

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
        # No ``now`` here: the TTL runs from the wall clock, a day past ``until``;
        # get_flag decides from the caller's ``now`` alone.
        ttl = _ms(max(0.0, until - time.time()) + FLAG_KEEP)
        await self._run("set_flag", "set_flag", [self._fkey(key)], [value, _ts(until), ttl])

    async def get_flag(self, key: str, now: float) -> str | None:
        with _storage_errors("get_flag"):
            value, until = await self._live("get_flag").hmget(self._fkey(key), "value", "until")
        if value is None or until is None or float(until) <= now:
            return None
        return str(value)

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        """Several flags in one pipelined round trip."""
        if not keys:
            return {}
        with _storage_errors("get_flags"):
            pipe = self._live("get_flags").pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._fkey(key), "value", "until")
            rows = await pipe.execute()
        return {
            key: str(value)
            for key, (value, until) in zip(keys, rows, strict=True)
            if value is not None and until is not None and float(until) > now
        }

    # -- events -----------------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        args: list[Any] = [self._opts.max_events, _ms(self._opts.event_ttl_days * 86_400.0)]
        for e in events:
            args += [e.id, _ts(e.ts), e.to_json()]
        await self._run("add_events", "add_events", self._ev, args)

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
        return total + await self._purge_events(now, event_horizon)

    async def _purge_events(self, now: float, event_horizon: float) -> int:
        total = 0
        while True:
            n = int(await self._run("purge", "purge_events", self._ev,
                                    [_ts(now - event_horizon), BATCH]))  # fmt: skip
            total += n
            if n < BATCH:
                return total

    async def scheduled_purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        """Verifications, rate logs and flags expire by TTL; a SCAN of every key once a
        minute would cost more than it frees. Only old events go (through their index)."""
        return await self._purge_events(now, event_horizon)

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
