"""The Redis store: one Redis, or a Redis Cluster, shared by every otpguard worker.

URLs (``docs/redis.md`` has the details; ``redis_url.py`` parses them)::

    redis://[[user]:password@]host:6379/0       one Redis
    rediss://...                                 the same over TLS
    redis+cluster://host:7000[,host:7001...]    Redis Cluster (database 0 only)

with optional query parameters ``prefix`` (key prefix, default ``og``), ``max_events``
(cap on stored events), ``event_ttl_days``, ``max_connections`` (connections per
process, per node in Cluster; default 100) and ``pool_timeout`` (seconds an operation
waits for a free connection, default 2; one Redis only); other query parameters go
to redis-py.

Every operation is one Lua script (``redis_lua.py``, ``redis_lua_rates.py``) or one
read. Keys are laid out for Redis Cluster: a hash tag puts all keys one script
touches into one slot. Each part of the store names its keys in its docstring:

    redis_verifications.py   og:{v:<id>}, og:{n:<e164>}:pending
    redis_rates.py           og:{rl:<key>}, og:{b:<key>}
    redis_admin.py           og:{f:<key>}, og:{ev}:..., og:{alerts}, og:{apikeys}
    redis_counts.py          og:{ev}:cnt:<family>[:idx]
    redis_lists.py           og:{nl}:entries, og:{nl}:block, og:{nl}:allow
    redis_services.py        og:{so:<id>}, og:{svc}:records, og:{svc}:of:<account>, ...
    webhooks_redis.py        og:{wh}:...

Time: every logical decision uses the caller's ``now``; Redis TTLs (wall clock) only
free memory, and are set generously past the logical expiry so that a key is never
dropped before the ``now``-based checks would stop using it.

Cross-slot work in Cluster is not atomic, and says so where it happens: the per-number
pending index is written before the verification (``redis_verifications.py``), and
``hit`` and ``admit`` over keys in several slots acquire step by step and compensate
on a refusal (``redis_cluster.py``).

Errors: ``Store.__init_subclass__`` wraps every public operation; ``backend_error``
(``redis_base.py``) names redis-py's errors, and the message is ``redis store: <op>
failed (<error class>)``, never a key or a value.
"""

from __future__ import annotations

import json
from typing import ClassVar

from . import redis_check, redis_lua, redis_lua_rates, redis_open, redis_settle
from .base import Store
from .opening import (
    CheckClosed,
    CheckOpened,
    CheckOpening,
    Judge,
    carried_out,
    in_steps,
    judged_closed,
    stored_events,
)
from .redis_base import escape_glob
from .redis_check import RedisCheck
from .redis_lists import LIST_SCRIPTS
from .redis_lua import ts
from .redis_open import opened_from
from .redis_services import SCRIPTS as SERVICE_SCRIPTS
from .redis_services import RedisServices
from .redis_start import SCRIPTS as START_SCRIPTS
from .webhooks_redis import SCRIPTS as WEBHOOK_SCRIPTS
from .webhooks_redis import RedisWebhooks


class RedisStore(RedisCheck, RedisWebhooks, RedisServices, Store):
    backend: ClassVar[str] = "redis"
    LUA = {
        **redis_lua.SCRIPTS, **redis_lua_rates.SCRIPTS, **START_SCRIPTS, **LIST_SCRIPTS,
        **WEBHOOK_SCRIPTS, **redis_settle.SCRIPTS, **redis_open.SCRIPTS, **SERVICE_SCRIPTS,
        **redis_check.SCRIPTS,
    }  # fmt: skip

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.judges_checks = not self._opts.cluster  # one script: its keys in one slot

    async def check_by_id(self, o: CheckOpening, judge: Judge) -> CheckClosed:
        """One script outside Cluster when the check presents its tags
        (``redis_check.py``); else, and for a verification of before, as ``in_steps``."""
        p = o.presented
        if p is None or self._opts.cluster:
            return await in_steps(self, o, judge)
        out = await self._check_script(o, p)
        opened = opened_from(o, out)
        if len(out) < 6:  # not judged there
            return await carried_out(self, opened, judge(opened), o.now)
        stored = stored_events(opened, [json.loads(e) for e in out[7]])
        return judged_closed(opened, judge(opened), int(out[5]), bool(out[6]), stored)

    async def open_check(self, o: CheckOpening) -> CheckOpened:
        """One script; in Cluster, the contract's three steps (``redis_open.py``)."""
        if self._opts.cluster:
            return await super().open_check(o)
        return await self._open_check(o)

    def __repr__(self) -> str:
        return f"RedisStore(cluster={self._opts.cluster}, prefix={self._opts.prefix!r})"

    async def purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        """TTLs free memory on their own; this removes what is logically stale by ``now``
        (as the SQL stores do), scanning the key space: verifications, rate entries,
        flags and sign-outs by SCAN over every primary, events through their time index."""
        p = escape_glob(self._opts.prefix)
        total = await self._purge_verifications(p, ts(now - verification_grace))
        rate_bound = f"({ts(now - rate_horizon)}"
        async for rkey in self._scan(f"{p}:{{rl:*}}"):
            total += int(await self._live.zremrangebyscore(rkey, "-inf", rate_bound))
        async for fkey in self._scan(f"{p}:{{f:*}}"):
            total += int(await self._run("purge_flag", [fkey], [ts(now)]))
        async for skey in self._scan(f"{p}:{{so:*}}"):
            total += int(await self._run("purge_sign_out", [skey], [ts(now)]))
        async for bkey in self._scan(f"{p}:{{b:*}}"):
            total += int(await self._run("purge_bucket", [bkey], [ts(now)]))
        total += await self._purge_lists(now)
        return total + await self._purge_events(now, event_horizon)

    async def _purge_verifications(self, p: str, bound: str) -> int:
        """Verifications that expired before ``bound``, and their index entries."""
        total = 0
        async for vkey in self._scan(f"{p}:{{v:*}}"):
            to, vid = await self._live.hmget(vkey, "to", "id")
            if to is None or vid is None:
                continue
            nkey = self._nkey(to)
            keys = [vkey] if self._opts.cluster else [vkey, nkey]
            removed = await self._run("purge_v", keys, [bound, vid])
            if removed and self._opts.cluster:
                await self._live.zrem(nkey, vid)
            total += int(removed)
        return total

    async def scheduled_purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        """Verifications, rate logs and flags expire by TTL; a SCAN of every key once a
        minute would cost more than it frees. Only old events go (through their index),
        and expired block and allow entries (through theirs: they have no TTL)."""
        return await self._purge_events(now, event_horizon) + await self._purge_lists(now)
