"""The webhook outbox on Redis and Redis Cluster (mixed into ``RedisStore``).

Every key carries the ``{wh}`` hash tag, so each script touches one slot::

    og:{wh}:ep            hash   scope -> endpoint JSON
    og:{wh}:d             hash   delivery id -> its fixed part (JSON: endpoint, type, payload)
    og:{wh}:of            hash   delivery id -> endpoint id
    og:{wh}:st/:att/:lease/:next/:log   hashes: each delivery's changing fields
    og:{wh}:due           zset   pending ids by next_at (the claim's queue)
    og:{wh}:all           zset   every id, score 0 (listed newest first by id)
    og:{wh}:created       zset   every id by created_at (the purge's index)
    og:{wh}:np            hash   endpoint id -> its pending rows (the cap)

The claim is one script: the due ids move to the lease's end in the queue before any
other script runs, so no id is in two claims.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .redis_base import RedisBase
from .webhooks import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookStore,
    log_from_json,
    trimmed_log,
)

_FIELDS = ("d", "of", "st", "att", "lease", "next", "log", "due", "all", "created", "np")

# KEYS: _FIELDS; ARGV: max_pending, then per row: id, endpoint, fixed JSON, created, next
ENQUEUE_LUA = """
local added, max = 0, tonumber(ARGV[1])
for i = 2, #ARGV, 5 do
  local id, ep = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[1], id) == 0
      and tonumber(redis.call('HGET', KEYS[11], ep) or '0') < max then
    redis.call('HSET', KEYS[1], id, ARGV[i + 2])
    redis.call('HSET', KEYS[2], id, ep)
    redis.call('HSET', KEYS[3], id, 'pending')
    redis.call('HSET', KEYS[4], id, '0')
    redis.call('HSET', KEYS[5], id, '')
    redis.call('HSET', KEYS[6], id, ARGV[i + 4])
    redis.call('HSET', KEYS[7], id, '[]')
    redis.call('ZADD', KEYS[8], ARGV[i + 4], id)
    redis.call('ZADD', KEYS[9], 0, id)
    redis.call('ZADD', KEYS[10], ARGV[i + 3], id)
    redis.call('HINCRBY', KEYS[11], ep, 1)
    added = added + 1
  end
end
return added
"""

# KEYS: _FIELDS; ARGV: now, limit, lease, lease_until
CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  redis.call('HSET', KEYS[5], id, ARGV[3])
  redis.call('HSET', KEYS[6], id, ARGV[4])
  local att = redis.call('HINCRBY', KEYS[4], id, 1)
  redis.call('ZADD', KEYS[8], ARGV[4], id)
  out[#out + 1] = {id, redis.call('HGET', KEYS[1], id), tostring(att),
                   redis.call('HGET', KEYS[7], id)}
end
return out
"""

# KEYS: _FIELDS; ARGV: id, lease, new log, status, next_at
FINISH_LUA = """
local id = ARGV[1]
if redis.call('HGET', KEYS[5], id) ~= ARGV[2] or redis.call('HGET', KEYS[3], id) ~= 'pending' then
  return 0
end
redis.call('HSET', KEYS[7], id, ARGV[3])
redis.call('HSET', KEYS[3], id, ARGV[4])
redis.call('HSET', KEYS[6], id, ARGV[5])
redis.call('HSET', KEYS[5], id, '')
if ARGV[4] == 'pending' then
  redis.call('ZADD', KEYS[8], ARGV[5], id)
else
  redis.call('ZREM', KEYS[8], id)
  redis.call('HINCRBY', KEYS[11], redis.call('HGET', KEYS[2], id), -1)
end
return 1
"""

# KEYS: _FIELDS; ARGV: before (exclusive), batch
PURGE_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  if redis.call('HGET', KEYS[3], id) == 'pending' then
    local ep = redis.call('HGET', KEYS[2], id)
    if tonumber(redis.call('HINCRBY', KEYS[11], ep, -1)) <= 0 then
      redis.call('HDEL', KEYS[11], ep)
    end
  end
  for k = 1, 7 do redis.call('HDEL', KEYS[k], id) end
  for k = 8, 10 do redis.call('ZREM', KEYS[k], id) end
end
return #ids
"""

SCRIPTS = {
    "wh_enqueue": ENQUEUE_LUA,
    "wh_claim": CLAIM_LUA,
    "wh_finish": FINISH_LUA,
    "wh_purge": PURGE_LUA,
}
PURGE_BATCH = 500
LIST_BATCH = 200


class RedisWebhooks(RedisBase, WebhookStore):
    @property
    def _wh(self) -> list[str]:
        return [f"{self._opts.prefix}:{{wh}}:{name}" for name in _FIELDS]

    @property
    def _wh_ep(self) -> str:
        return f"{self._opts.prefix}:{{wh}}:ep"

    async def put_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        data = json.dumps([endpoint.id, endpoint.url, endpoint.key_id, endpoint.created_at])
        await self._live.hset(self._wh_ep, endpoint.scope, data)

    async def delete_webhook_endpoint(self, scope: str) -> bool:
        return bool(await self._live.hdel(self._wh_ep, scope))

    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]:
        raw = await self._live.hgetall(self._wh_ep)
        out = []
        for scope, data in sorted(raw.items()):
            ep_id, url, key_id, created = json.loads(data)
            out.append(WebhookEndpoint(ep_id, scope, url, key_id, float(created)))
        return out

    async def enqueue_webhooks(
        self, deliveries: Sequence[WebhookDelivery], max_pending: int
    ) -> int:
        if not deliveries:
            return 0
        args: list[Any] = [max_pending]
        for d in deliveries:
            fixed = json.dumps([d.endpoint_id, d.event_type, d.payload, d.created_at])
            args += [d.id, d.endpoint_id, fixed, repr(d.created_at), repr(d.next_at)]
        return int(await self._run("wh_enqueue", self._wh, args))

    async def claim_webhooks(
        self, now: float, limit: int, lease: str, lease_until: float
    ) -> list[WebhookDelivery]:
        args = [repr(now), limit, lease, repr(lease_until)]
        rows = await self._run("wh_claim", self._wh, args)
        out = []
        for delivery_id, fixed, attempts, log in rows:
            endpoint_id, event_type, payload, created_at = json.loads(fixed)
            out.append(
                WebhookDelivery(
                    id=delivery_id,
                    endpoint_id=endpoint_id,
                    event_type=event_type,
                    payload=payload,
                    created_at=float(created_at),
                    next_at=lease_until,
                    attempts=int(attempts),
                    lease=lease,
                    log=log_from_json(log),
                )
            )
        return sorted(out, key=lambda d: d.id)

    async def finish_webhook(
        self, delivery_id: str, lease: str, attempt: WebhookAttempt, status: str,
        next_at: float, max_log: int,
    ) -> bool:  # fmt: skip
        # Only the lease's holder writes the log, and the script writes only while the
        # lease holds: reading it first cannot lose another attempt's entry.
        log = await self._live.hget(self._wh[6], delivery_id)
        if log is None:
            return False
        args = [delivery_id, lease, trimmed_log(log, attempt, max_log), status, repr(next_at)]
        return bool(await self._run("wh_finish", self._wh, args))

    async def list_webhook_deliveries(
        self, *, endpoint_id: str | None = None, status: str | None = None,
        before_id: str | None = None, limit: int = 100,
    ) -> list[WebhookDelivery]:  # fmt: skip
        keys = self._wh
        out: list[WebhookDelivery] = []
        top = f"({before_id}" if before_id else "+"
        client = self._live
        while len(out) < limit:
            ids = await client.zrevrangebylex(keys[8], top, "-", 0, LIST_BATCH)
            if not ids:
                break
            top = f"({ids[-1]}"
            fixed, st, att, lease, nxt, logs = [
                await client.hmget(keys[k], ids) for k in (0, 2, 3, 4, 5, 6)
            ]
            for i, delivery_id in enumerate(ids):
                if fixed[i] is None:
                    continue  # purged between the two reads
                ep, event_type, payload, created_at = json.loads(fixed[i])
                if (endpoint_id and ep != endpoint_id) or (status and st[i] != status):
                    continue
                out.append(
                    WebhookDelivery(delivery_id, ep, event_type, payload, float(created_at),
                                    float(nxt[i]), st[i], int(att[i]), lease[i] or "",
                                    log_from_json(logs[i]))
                )  # fmt: skip
        return out[:limit]

    async def purge_webhooks(self, before: float) -> int:
        total = 0
        while True:
            n = int(await self._run("wh_purge", self._wh, [repr(before), PURGE_BATCH]))
            total += n
            if n < PURGE_BATCH:
                return total
