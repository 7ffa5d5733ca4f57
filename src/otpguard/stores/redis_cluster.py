"""Redis Cluster's cross-slot work for ``hit`` and ``admit``: step by step, compensated.

A call whose rate logs and buckets hash to one slot is one script (``redis_rates.py``).
Keys in several slots cannot be one script, so ``RedisStepwise._stepwise`` acquires
them one by one, each step atomic on its key, and takes back what it added when a
later step refuses:

1. the ``skip_if_seen`` keys are read (one pipelined round trip, before this call
   adds anything);
2. each enforced rule's check-and-add, one script on its key;
3. each bucket's check-and-raise;
4. the record-only rules last (they never refuse, so what they add is never taken
   back).

No rule or bucket ever admits more than its limit. Between the add and the removal
(one round trip per step) other callers see those keys higher than they will end up
and may be refused by them: errors refuse more, never admit more. If this process
dies (or Redis fails) before the removal, the entries stay until they leave the
window (the bucket levels until they decay).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..models import Bucket, RateDecision, RateRule
from .base import allowed_decision
from .redis_base import BATCH, REDIS_ERRORS, RedisBase
from .redis_lua import ms, ts
from .redis_lua_rates import RATE_KEEP, bucket_args, bucket_refusal, rule_refusal


@dataclass
class Steps:
    """One stepwise call: what it records, and what it added so far (to take back)."""

    now: float
    cost: int
    record: bool
    nonce: str
    keep: dict[str, int]
    added: list[str] = field(default_factory=list)  # rate keys this call added entries to
    touched: set[str] = field(default_factory=set)  # rate keys a step has run on
    taken: list[Bucket] = field(default_factory=list)  # buckets this call raised

    def members(self) -> list[str]:
        """The entries this call adds under each key (``record`` in redis_lua_rates)."""
        return [f"{ts(self.now)}:{self.nonce}:{i}" for i in range(1, self.cost + 1)]

    def hit_args(self, r: RateRule, ours: int, enforced: bool, add: int) -> list[object]:
        """HIT_LUA's ARGV for rule ``r`` alone on its key."""
        return [ts(self.now), self.cost, self.nonce, 1, 1, r.limit, r.window, ours,
                int(enforced), 0, add, ms(self.keep[r.key] + RATE_KEEP)]  # fmt: skip


class RedisStepwise(RedisBase):
    async def _stepwise(
        self,
        rules: tuple[RateRule, ...],
        buckets: tuple[Bucket, ...],
        steps: Steps,
        pressure: float | None = None,
        force: bool = False,
    ) -> RateDecision:
        """Keys in several Cluster slots: acquire step by step, compensate on a
        refusal (this module's docstring)."""
        skipped = await self._seen(rules, steps.now)
        active = [i for i in range(len(rules)) if i not in skipped]
        counts = [0] * len(rules)
        try:
            refused = await self._step_rules(steps, rules, active, counts)
            if refused is None:
                refused = await self._step_buckets(steps, buckets, pressure, force)
            if refused is not None:
                await self._compensate(steps)
                return refused
            await self._step_record_only(steps, [rules[i] for i in active if rules[i].record_only])
        except BaseException:
            if steps.added or steps.taken:
                with contextlib.suppress(*REDIS_ERRORS):
                    await self._compensate(steps)
            raise
        if buckets and not rules:
            return RateDecision(True)
        return allowed_decision(rules, counts, steps.cost if steps.record else 0)

    async def _step_rules(
        self, steps: Steps, rules: Sequence[RateRule], active: Sequence[int], counts: list[int]
    ) -> RateDecision | None:
        """Each enforced rule's check-and-add; the first refusal, or None."""
        for i in (i for i in active if not rules[i].record_only):
            r = rules[i]
            fresh = r.key not in steps.touched
            ours = steps.cost if (steps.record and not fresh and r.key in steps.added) else 0
            add = steps.keep[r.key] if (steps.record and fresh) else 0
            out = await self._run("hit", [self._rkey(r.key)], steps.hit_args(r, ours, True, add))
            steps.touched.add(r.key)
            if out[0] != 0:
                return rule_refusal(r, out, steps.now)
            if add and steps.cost:
                steps.added.append(r.key)
            counts[i] = int(out[1])
        return None

    async def _step_buckets(
        self, steps: Steps, buckets: Sequence[Bucket], pressure: float | None, force: bool
    ) -> RateDecision | None:
        """Each bucket's check-and-raise; the first refusal, or None."""
        for b in buckets:
            args = [
                ts(steps.now),
                steps.nonce,
                0,
                0,
                *bucket_args((b,), steps.now, pressure, force),
            ]
            out = await self._run("admit", [self._bkey(b.key)], args)
            if out[0] != 0:
                return bucket_refusal(b, out)
            steps.taken.append(b)
        return None

    async def _step_record_only(self, steps: Steps, rules: Sequence[RateRule]) -> None:
        """The record-only rules: one entry per key, even when several rules share one."""
        for r in rules:
            if r.key in steps.touched:
                continue
            steps.touched.add(r.key)
            if steps.record and steps.cost:
                args = steps.hit_args(r, 0, False, steps.keep[r.key])
                await self._run("hit", [self._rkey(r.key)], args)
                steps.added.append(r.key)

    async def _seen(self, rules: Sequence[RateRule], now: float) -> set[int]:
        """The rules whose ``skip_if_seen`` key has an entry in the rule's window."""
        seen = [(i, r) for i, r in enumerate(rules) if r.skip_if_seen is not None]
        if not seen:
            return set()
        pipe = self._live.pipeline(transaction=False)
        for _, r in seen:
            pipe.zcount(self._rkey(str(r.skip_if_seen)), f"({ts(now - r.window)}", "+inf")
        found = await pipe.execute()
        return {i for (i, _), n in zip(seen, found, strict=True) if int(n) > 0}

    async def _compensate(self, steps: Steps) -> None:
        """Take back what ``steps`` added; it then holds nothing to take back."""
        members = steps.members()
        for key in steps.added:
            for i in range(0, len(members), BATCH):
                await self._live.zrem(self._rkey(key), *members[i : i + BATCH])
        for b in steps.taken:
            await self._run("give_back", [self._bkey(b.key)], [ts(steps.now), repr(float(b.tau))])
        steps.added, steps.taken = [], []
