"""The shells' records in the Redis store (mixed into ``RedisStore``)::

    og:{so:<session id>}     string a dashboard sign-out: its until (TTL: until - wall
                             clock + a day; a sign-out kept as a flag is read too)
    og:{svc}:records         hash   id -> the record's JSON (account, document, created_at)
    og:{svc}:of:<account>    zset   the account's ids, scored in the order first kept
    og:{svc}:adopted         string set once the services kept as flags were copied

One hash tag: a put (with its cap), a list and a delete are each one script, one
round trip. The services earlier releases kept as flags
(``records.SERVICE_FLAG_PREFIX``) are copied once, by the first service operation on
a database that has not had them copied (a SCAN of the flags on every primary); the
flags stay, for an instance of before.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .records import (
    SERVICE_FLAG_FOREVER,
    SERVICE_FLAG_PREFIX,
    SIGN_OUT_FLAG_PREFIX,
    ServiceRecord,
)
from .redis_base import RedisBase, escape_glob, to_json
from .redis_lua import ms, ts

SIGN_OUT_KEEP = 86_400  # seconds a sign-out's key outlives its ``until`` (wall clock)

#: KEYS: records, of:<account>; ARGV: id, JSON, cap, only_new ("1": keep an existing
#: record as it is). A new one is scored after the account's last. 1 when kept (or
#: kept already), 0 at the cap.
PUT_LUA = """
local had = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if had and ARGV[4] == '1' then return 1 end
if not had then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
  local last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[2], (tonumber(last[2]) or 0) + 1, ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
#: KEYS: records, of:<account>: the account's records' JSON, oldest first.
LIST_LUA = """
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""
#: KEYS: records, of: (the accounts' key without one: ``_skeys("")[1]``); ARGV: id.
#: 1 when deleted. The record names its account: its of:<account> is built here, a
#: key not declared but of the same hash tag, so in Cluster the same slot and node
#: (Redis refuses only a key of another slot; the prefix has no braces).
DELETE_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2] .. cjson.decode(raw)['account'], ARGV[1])
return 1
"""
#: KEYS: a sign-out; ARGV: now. Deleted (1) if its until has passed (``purge``).
PURGE_SIGN_OUT_LUA = """
local ends = redis.call('GET', KEYS[1])
if ends and tonumber(ends) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
SCRIPTS = {
    "svc_put": PUT_LUA,
    "svc_list": LIST_LUA,
    "svc_delete": DELETE_LUA,
    "purge_sign_out": PURGE_SIGN_OUT_LUA,
}


def _record(raw: str | bytes) -> ServiceRecord:
    d = json.loads(raw)
    return ServiceRecord(d["id"], d["account"], d["document"], float(d["created_at"]))


def _json(r: ServiceRecord) -> str:
    return to_json(
        {"id": r.id, "account": r.account, "document": r.document, "created_at": r.created_at}
    )


class RedisServices(RedisBase):
    def _skeys(self, account: str) -> list[str]:
        p = self._opts.prefix
        return [f"{p}:{{svc}}:records", f"{p}:{{svc}}:of:{account}"]

    _adopted = False  # this process saw the flags copied (``_adopt``)

    async def _adopt(self) -> None:
        """Before a process's first service operation (not in ``open``, which needs no
        server): copy the services kept as flags unless a store did already."""
        if self._adopted:
            return
        adopted = f"{self._opts.prefix}:{{svc}}:adopted"
        if not await self._live.exists(adopted):
            await self._adopt_flag_services()
            await self._live.set(adopted, "1")
        self._adopted = True

    async def _adopt_flag_services(self) -> None:
        """Copy each live service kept as a flag, leaving a record made since as it is."""
        pattern = f"{escape_glob(self._opts.prefix)}:{{f:{escape_glob(SERVICE_FLAG_PREFIX)}*}}"
        found = []
        async for fkey in self._scan(pattern):
            value, until = await self._live.hmget(fkey, "value", "until")
            if value is None or until is None or float(until) < SERVICE_FLAG_FOREVER:
                continue  # deleted (its until was the time of its deletion)
            doc: dict[str, Any] = json.loads(value)
            sid = str(fkey).removeprefix(f"{self._opts.prefix}:{{f:{SERVICE_FLAG_PREFIX}")
            found.append(
                ServiceRecord(sid[:-1], str(doc["account_sid"]), value, float(doc["created_at"]))
            )
        for record in sorted(found, key=lambda r: (r.created_at, r.id)):  # created order
            await self._put(record, None)

    async def _put(self, record: ServiceRecord, cap: int | None) -> bool:
        """``cap`` None: a copy, never over a record of that id, never refused."""
        limit, only_new = (2**62, "1") if cap is None else (cap, "0")
        args = [record.id, _json(record), limit, only_new]
        return bool(await self._run("svc_put", self._skeys(record.account), args))

    async def put_service(self, record: ServiceRecord, cap: int) -> bool:
        await self._adopt()
        return await self._put(record, cap)

    async def get_service(self, service_id: str) -> ServiceRecord | None:
        await self._adopt()
        raw = await self._live.hget(self._skeys("")[0], service_id)
        return None if raw is None else _record(raw)

    async def list_services(self, account: str) -> list[ServiceRecord]:
        await self._adopt()
        rows = await self._run("svc_list", self._skeys(account), [])
        return [_record(raw) for raw in rows if raw is not None]  # ZRANGE's order

    async def delete_service(self, service_id: str) -> bool:
        """One script: the record read, deleted and taken out of its account's order."""
        await self._adopt()
        return bool(await self._run("svc_delete", self._skeys(""), [service_id]))

    async def sign_out(self, session_id: str, until: float) -> None:
        ttl = ms(max(0.0, until - time.time()) + SIGN_OUT_KEEP)
        await self._live.set(f"{self._opts.prefix}:{{so:{session_id}}}", ts(until), px=ttl)

    async def signed_out(self, session_id: str, now: float) -> bool:
        """The sign-out, or the flag an earlier release kept for it (read in the same
        round trip; such a flag lives a session's lifetime at most)."""
        pipe = self._live.pipeline(transaction=False)
        pipe.get(f"{self._opts.prefix}:{{so:{session_id}}}")
        pipe.hget(self._fkey(SIGN_OUT_FLAG_PREFIX + session_id), "until")
        untils = await pipe.execute()
        return any(until is not None and float(until) > now for until in untils)
