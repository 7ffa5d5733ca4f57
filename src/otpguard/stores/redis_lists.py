"""The block and allow lists (``otpguard.numberlists``) in the Redis store.

Every entry and both indexes share one hash tag, so each change is one Lua script
on one slot, atomic in Redis Cluster too::

    og:{nl}:<pattern>   hash   one entry as a flag (value, until): what get_flags reads
    og:{nl}:block       zset   patterns of the block entries, score = until
    og:{nl}:allow       zset   patterns of the allow entries, score = until

(``RedisStore._fkey`` maps a ``numlist:`` flag key into the tag.) The cost is that
one slot, one node of a cluster, answers the list part of every send's flag read:
one more node in the pipelined read, at most 15 HMGETs. Expired index members are
dropped by the next change and by ``purge``; an entry's hash outlives its ``until``
by ``FLAG_KEEP`` (wall clock) and is ignored once ``until`` has passed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from ..numberlists import KEY_PREFIX, ListEntry, NumberListFull, decode, encode, flag_key

LIST_BATCH = 500  # entries per pipelined read
LIST_KEEP = 86_400  # seconds an entry's hash outlives its until (redis.py's FLAG_KEEP)

# KEYS: entry, block index, allow index; ARGV: pattern, kind, value, until, now, cap, ttl_ms.
# Returns {0} when full, {1} when added, {1, value, until} when it replaced a live entry.
PUT_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
local prev = redis.call('HMGET', KEYS[1], 'value', 'until')
local live = prev[1] and prev[2] and tonumber(prev[2]) > tonumber(ARGV[5])
local n = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if not live and n >= tonumber(ARGV[6]) then return {0} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', ARGV[2] == 'block' and KEYS[2] or KEYS[3], ARGV[4], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'value', ARGV[3], 'until', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if live then return {1, prev[1], prev[2]} end
return {1}
"""

# KEYS: entry, block index, allow index; ARGV: pattern. Returns {value, until} or {}.
DELETE_LUA = """
local prev = redis.call('HMGET', KEYS[1], 'value', 'until')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if prev[1] and prev[2] then return {prev[1], prev[2]} end
return {}
"""

# KEYS: entry; ARGV: now. Deletes the entry if its until has passed.
PURGE_ENTRY_LUA = """
local u = redis.call('HGET', KEYS[1], 'until')
if not u or tonumber(u) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

LIST_SCRIPTS = {
    "list_put": PUT_LUA,
    "list_delete": DELETE_LUA,
    "list_purge": PURGE_ENTRY_LUA,
}


def _ts(x: float) -> str:
    return repr(float(x))


def list_key(prefix: str, key: str) -> str:
    """``numlist:+4474`` -> ``og:{nl}:+4474``."""
    return f"{prefix}:{{nl}}:{key[len(KEY_PREFIX) :]}"


def _live(pattern: str, raw: Sequence[Any], now: float) -> ListEntry | None:
    if len(raw) < 2 or raw[0] is None or raw[1] is None or float(raw[1]) <= now:
        return None
    return decode(pattern, str(raw[0]), float(raw[1]))


class RedisLists:
    """Mixed into RedisStore, which provides the plumbing below."""

    _list_prefix: str

    async def _run(self, op: str, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        raise NotImplementedError  # RedisStore's

    def _live(self, op: str) -> Any:
        raise NotImplementedError  # RedisStore's

    def _errors(self, op: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # RedisStore's

    def _index_keys(self) -> tuple[str, str]:
        p = self._list_prefix
        return f"{p}:{{nl}}:block", f"{p}:{{nl}}:allow"

    def _entry_key(self, pattern: str) -> str:
        return list_key(self._list_prefix, flag_key(pattern))

    async def put_list_entry(self, entry: ListEntry, now: float, cap: int) -> ListEntry | None:
        ttl = max(1_000, int((max(0.0, entry.until - time.time()) + LIST_KEEP) * 1000))
        args = [entry.pattern, entry.kind, encode(entry), _ts(entry.until), _ts(now), cap, ttl]
        keys = [self._entry_key(entry.pattern), *self._index_keys()]
        out = await self._run("put_list_entry", "list_put", keys, args)
        if int(out[0]) == 0:
            raise NumberListFull(cap)
        return _live(entry.pattern, out[1:], now) if len(out) > 1 else None

    async def delete_list_entry(self, pattern: str, now: float) -> ListEntry | None:
        keys = [self._entry_key(pattern), *self._index_keys()]
        out = await self._run("delete_list_entry", "list_delete", keys, [pattern])
        return _live(pattern, out, now)

    async def _patterns(self, op: str, low: str, high: str) -> list[str]:
        with self._errors(op):
            client = self._live(op)
            out: list[str] = []
            for index in self._index_keys():
                out += await client.zrangebyscore(index, low, high)
        return out

    async def list_entries(self, now: float) -> list[ListEntry]:
        patterns = await self._patterns("list_entries", f"({_ts(now)}", "+inf")
        entries: list[ListEntry] = []
        with self._errors("list_entries"):
            client = self._live("list_entries")
            for i in range(0, len(patterns), LIST_BATCH):
                batch = patterns[i : i + LIST_BATCH]
                pipe = client.pipeline(transaction=False)
                for pattern in batch:
                    pipe.hmget(self._entry_key(pattern), "value", "until")
                for pattern, raw in zip(batch, await pipe.execute(), strict=True):
                    entry = _live(pattern, raw, now)
                    if entry is not None:
                        entries.append(entry)
        entries.sort(key=lambda x: x.pattern)
        entries.sort(key=lambda x: x.created_at, reverse=True)
        return entries

    async def count_list_entries(self, now: float) -> dict[str, int]:
        block, allow = self._index_keys()
        with self._errors("count_list_entries"):
            client = self._live("count_list_entries")
            return {
                "block": int(await client.zcount(block, f"({_ts(now)}", "+inf")),
                "allow": int(await client.zcount(allow, f"({_ts(now)}", "+inf")),
            }

    async def _purge_lists(self, now: float) -> int:
        """Delete the expired entries and their index members."""
        total = 0
        for pattern in await self._patterns("purge", "-inf", _ts(now)):
            key = self._entry_key(pattern)
            total += int(await self._run("purge", "list_purge", [key], [_ts(now)]))
        with self._errors("purge"):
            client = self._live("purge")
            for index in self._index_keys():
                await client.zremrangebyscore(index, "-inf", _ts(now))
        return total
