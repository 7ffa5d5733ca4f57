"""The block and allow lists (``otpguard.numberlists``) in the Redis store.

Every entry is one field of one hash, beside two indexes, all under one hash tag, so
each change is one Lua script on one slot, atomic in Redis Cluster too::

    og:{nl}:entries   hash   pattern -> "<until>|<value>": every entry
    og:{nl}:block     zset   patterns of the block entries, score = until
    og:{nl}:allow     zset   patterns of the allow entries, score = until

``RedisStore.get_flags`` reads the ``numlist:`` keys of a send (the number and each
prefix of it) as one HMGET of this hash, in the pipeline of its other flags: one
more command, where one HMGET per prefix (12 for a UK mobile) made redis-py's
pipelined read about four times slower (0.30 ms -> 1.27 ms, best of 8 rounds, on a
loaded 2-core machine). The price is that one slot, one node of a cluster, answers
the list part of every send's read. A field has no TTL: expired
entries are deleted by the next change and by both purges (through the indexes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..numberlists import KEY_PREFIX, ListEntry, NumberListFull, decode, encode
from .redis_base import RedisBase
from .redis_lua import ts

# KEYS: entries, block index, allow index. Deletes the entries whose until <= now and
# their index members; returns how many.
_PRUNE = """
local function prune(now)
  local n = 0
  for k = 2, 3 do
    local gone = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', now)
    for i = 1, #gone, 500 do
      n = n + redis.call('HDEL', KEYS[1], unpack(gone, i, math.min(i + 499, #gone)))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  end
  return n
end
"""

# ARGV: pattern, kind, packed entry, until, now, cap. {0}: full; {1}: added;
# {1, packed}: replaced the live entry ``packed``.
PUT_LUA = (
    _PRUNE
    + """
prune(ARGV[5])
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local n = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if not prev and n >= tonumber(ARGV[6]) then return {0} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', ARGV[2] == 'block' and KEYS[2] or KEYS[3], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if prev then return {1, prev} end
return {1}
"""
)

# ARGV: pattern. Returns the packed entry removed, or false.
DELETE_LUA = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return prev
"""

# ARGV: now. Returns how many entries were deleted.
PURGE_LUA = _PRUNE + "return prune(ARGV[1])\n"

LIST_SCRIPTS = {"list_put": PUT_LUA, "list_delete": DELETE_LUA, "list_purge": PURGE_LUA}


def pack(entry: ListEntry) -> str:
    return f"{ts(entry.until)}|{encode(entry)}"


def unpack(packed: str | None, now: float) -> tuple[float, str] | None:
    """``(until, value)`` of a live packed entry; None when missing or expired."""
    if not packed:
        return None
    until, _, value = packed.partition("|")
    return (float(until), value) if float(until) > now else None


def _entry(pattern: str, packed: str | None, now: float) -> ListEntry | None:
    live = unpack(packed, now)
    return None if live is None else decode(pattern, live[1], live[0])


class RedisLists(RedisBase):
    def _list_keys(self) -> list[str]:
        p = self._opts.prefix
        return [f"{p}:{{nl}}:entries", f"{p}:{{nl}}:block", f"{p}:{{nl}}:allow"]

    def _queue_list_read(self, pipe: Any, keys: Sequence[str]) -> None:
        """Queue the read of ``numlist:`` flag ``keys`` on ``pipe``: one HMGET."""
        pipe.hmget(self._list_keys()[0], [k[len(KEY_PREFIX) :] for k in keys])

    @staticmethod
    def _list_flags(keys: Sequence[str], row: Sequence[str | None], now: float) -> dict[str, str]:
        """The live flags among ``keys`` from the HMGET ``_queue_list_read`` queued."""
        out = {}
        for key, packed in zip(keys, row, strict=True):
            live = unpack(packed, now)
            if live is not None:
                out[key] = live[1]
        return out

    async def put_list_entry(self, entry: ListEntry, now: float, cap: int) -> ListEntry | None:
        args = [entry.pattern, entry.kind, pack(entry), ts(entry.until), ts(now), cap]
        out = await self._run("list_put", self._list_keys(), args)
        if int(out[0]) == 0:
            raise NumberListFull(cap)
        return _entry(entry.pattern, out[1], now) if len(out) > 1 else None

    async def delete_list_entry(self, pattern: str, now: float) -> ListEntry | None:
        out = await self._run("list_delete", self._list_keys(), [pattern])
        return _entry(pattern, out or None, now)

    async def list_entries(self, now: float) -> list[ListEntry]:
        raw: dict[str, str] = await self._live.hgetall(self._list_keys()[0])
        entries = [x for p, packed in raw.items() if (x := _entry(p, packed, now)) is not None]
        entries.sort(key=lambda x: x.pattern)
        entries.sort(key=lambda x: x.created_at, reverse=True)
        return entries

    async def count_list_entries(self, now: float) -> dict[str, int]:
        _, block, allow = self._list_keys()
        client = self._live
        return {
            "block": int(await client.zcount(block, f"({ts(now)}", "+inf")),
            "allow": int(await client.zcount(allow, f"({ts(now)}", "+inf")),
        }

    async def _purge_lists(self, now: float) -> int:
        """Delete the expired entries (both purges: entries have no TTL)."""
        return int(await self._run("list_purge", self._list_keys(), [ts(now)]))
