"""Rate windows and admission buckets in the Redis store.

::

    og:{rl:<key>}            zset   sliding log of one rate key, score = ts
    og:{b:<key>}             hash   one admission bucket: level, earned, t, forget_at

``hit`` and ``admit`` are one script (``redis_lua_rates.py``) when their keys share a
slot, always outside Cluster; over several Cluster slots they go step by step
(``redis_cluster.py``). The script decides atomically whether every rule and bucket
has room; the allowed decision's count is ``allowed_decision``'s, as in every backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..models import Bucket, RateDecision, RateRule
from .base import Started, allowed_decision
from .decisions import FLAGS_FOUND
from .redis_cluster import Steps
from .redis_lua import ts
from .redis_lua_rates import (
    bucket_args,
    bucket_refusal,
    credit_args,
    keep_of,
    rate_keys,
    record_args,
    rule_args,
    rule_refusal,
)
from .redis_start import RedisStarts


class RedisRates(RedisStarts):
    async def hit(
        self, rules: Sequence[RateRule], now: float, cost: int = 1, record: bool = True
    ) -> RateDecision:
        if cost < 0:
            raise ValueError("cost must be >= 0")
        rules, nonce = tuple(rules), os.urandom(8).hex()
        keys = rate_keys(rules)
        if not keys:  # no rules: nothing to judge or record
            return RateDecision(allowed=True)
        if not self._one_slot([self._rkey(k) for k in keys]):
            return await self._stepwise(rules, (), Steps(now, cost, record, nonce, keep_of(rules)))
        args: list[Any] = [ts(now), cost, nonce, *rule_args(rules, keys)]
        args += record_args(keys, keep_of(rules), record)
        out = await self._run("hit", [self._rkey(k) for k in keys], args)
        if out[0] != 0:
            return rule_refusal(rules[out[0] - 1], out, now)
        return allowed_decision(rules, [int(n) for n in out[1:]], cost if record else 0)

    async def release(self, keys: Sequence[str], at: float, cost: int = 1) -> None:
        rkeys = [self._rkey(k) for k in dict.fromkeys(keys)]
        if not rkeys or cost <= 0:
            return
        # Cluster: key by key, each atomic (a release only lowers counts).
        groups = [rkeys] if self._one_slot(rkeys) else [[k] for k in rkeys]
        for group in groups:
            await self._run("release", group, [ts(at), cost])

    async def admit(
        self, rules: Sequence[RateRule], buckets: Sequence[Bucket], now: float, *,
        pressure: float | None = None, force: bool = False, start: Started | None = None,
    ) -> RateDecision:  # fmt: skip
        rules, buckets = tuple(rules), tuple(buckets)
        # Cluster: a start's unless_flags lie in other slots; read before the admission.
        unless = start.unless_flags if start is not None and self._opts.cluster else ()
        if unless and await self.get_flags(unless, now):
            return FLAGS_FOUND
        nonce = os.urandom(8).hex()
        keys = rate_keys(rules)
        redis_keys = [self._rkey(k) for k in keys] + [self._bkey(b.key) for b in buckets]
        if not self._one_slot(redis_keys):
            steps = Steps(now, 1, True, nonce, keep_of(rules))
            decision = await self._stepwise(rules, buckets, steps, pressure, force)
            if decision.allowed and start is not None:  # slot by slot (redis_start.py)
                await self._write_start(start)
            return decision
        args: list[Any] = [ts(now), nonce, len(keys), *rule_args(rules, keys)]
        args += record_args(keys, keep_of(rules), True)
        args += bucket_args(buckets, now, pressure, force)
        out = await self._admit_script(redis_keys, args, start)
        if out[0] == "flags":
            return FLAGS_FOUND
        if out[0] > 0:
            return rule_refusal(rules[out[0] - 1], out, now)
        if out[0] < 0:
            return bucket_refusal(buckets[-out[0] - 1], out)
        return allowed_decision(rules, [int(n) for n in out[1:]], 1)

    async def credit(self, buckets: Sequence[Bucket], refund: int, now: float) -> None:
        buckets = tuple(buckets)
        if not buckets:
            return
        # Cluster: bucket by bucket, each one atomic (see docs/redis.md).
        one = self._one_slot([self._bkey(b.key) for b in buckets])
        for group in [buckets] if one else [(b,) for b in buckets]:
            keys = [self._bkey(b.key) for b in group]
            await self._run("credit", keys, credit_args(group, refund, now))

    async def count(self, key: str, window: int, now: float) -> int:
        n: int = await self._live.zcount(self._rkey(key), f"({ts(now - window)}", "+inf")
        return n

    async def counts(self, queries: Sequence[tuple[str, int]], now: float) -> list[int]:
        """Several counts in one pipelined round trip (not a snapshot across keys)."""
        if not queries:
            return []
        pipe = self._live.pipeline(transaction=False)
        for key, window in queries:
            pipe.zcount(self._rkey(key), f"({ts(now - window)}", "+inf")
        return [int(n) for n in await pipe.execute()]
