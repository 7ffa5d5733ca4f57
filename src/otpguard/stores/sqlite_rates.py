"""SQLite's rate windows and admission buckets: what its store runs inside ``_run``.

A sliding window is counted exactly from ``rate_log``'s running count per key, two
index probes whatever the traffic (``rate_log.py``), kept under the write transaction.
Which rule refuses, its ``retry_after`` and the fullest rule's count are the
contract's (``base.refusal``, ``base.allowed_decision``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import admission
from ..models import Bucket, RateDecision, RateRule
from . import rate_log
from .base import allowed_decision, must_leave, refusal
from .sql import Body, Cursor, marks

#: Migration 2 (released): per-minute counts beside the sliding log, which counted the
#: entries of a window's partial first minute; migration 8 drops them (``rate_log.py``).
MIGRATION_2 = (
    """CREATE TABLE rate_buckets (
            key TEXT NOT NULL,
            start INTEGER NOT NULL,
            n INTEGER NOT NULL,
            UNIQUE (key, start)
        )""",
    "CREATE INDEX rate_buckets_start ON rate_buckets (start)",
    "INSERT INTO rate_buckets (key, start, n) "
    "SELECT key, CAST(ts / 60 AS INTEGER) * 60, COUNT(*) FROM rate_log GROUP BY 1, 2",
)

_COUNT = rate_log.count("?", "?")
_NTH_TS = rate_log.NTH_TS.format(key="?", start="?", offset="?")
_NTH_BACK = rate_log.NTH_TS_FROM_END.format(key="?", start="?", offset="?")


async def counts(cur: Cursor, windows: Sequence[tuple[str, float]]) -> list[int]:
    """The events of each ``(key, start)`` window since ``start``, in one statement."""
    if not windows:
        return []
    sql = "SELECT " + ", ".join([_COUNT] * len(windows))
    row = await cur.one(sql, rate_log.counts_params(windows))
    assert row is not None
    return [int(n) for n in row]


async def _oldest(cur: Cursor, rule: RateRule, now: float, n: int, leave: int) -> float | None:
    """The ts of the ``leave``-th of the ``n`` entries in ``rule``'s window, read from
    the nearer end (``rate_log.nth_from_start``)."""
    sql, offset = (
        (_NTH_TS, leave - 1) if rate_log.nth_from_start(leave, n) else (_NTH_BACK, n - leave)
    )
    row = await cur.one(sql, (rule.key, now - rule.window, offset))
    return None if row is None else float(row[0])


async def _judge(
    cur: Cursor, rules: Sequence[RateRule], now: float, cost: int
) -> tuple[RateDecision | None, list[int], list[str]]:
    """Inside a transaction: the first full rule's refusal (or None), every rule's
    count, and the keys an admitted event is recorded under."""
    seen = [(i, r) for i, r in enumerate(rules) if r.skip_if_seen is not None]
    found = await counts(cur, [(str(r.skip_if_seen), now - r.window) for _, r in seen])
    skipped = {i for (i, _), n in zip(seen, found, strict=True) if n}
    counted = [i for i, r in enumerate(rules) if not r.record_only and i not in skipped]
    numbers = await counts(cur, [(rules[i].key, now - rules[i].window) for i in counted])
    tally = [0] * len(rules)
    for i, n in zip(counted, numbers, strict=True):
        tally[i] = n
    for i in counted:
        rule, n = rules[i], tally[i]
        leave = must_leave(rule, n, cost)
        if leave:
            oldest = await _oldest(cur, rule, now, n, leave) if leave <= n else None
            return refusal(rule, n, oldest, now), tally, []  # (None: cost > limit, never fits)
    # One event is one entry per key, even when several rules share a key.
    keys = list(dict.fromkeys(r.key for i, r in enumerate(rules) if i not in skipped))
    return None, tally, keys


async def record_entries(cur: Cursor, keys: Sequence[str], now: float, cost: int) -> None:
    if not keys or not cost:
        return
    await cur.many(rate_log.SQLITE_RECORD, [(key, now) for key in keys for _ in range(cost)])
    await cur.many(rate_log.SQLITE_SHIFT, [(cost, key, now) for key in keys])


async def _bucket_states(
    cur: Cursor, buckets: Sequence[Bucket], now: float
) -> list[admission.Level]:
    if not buckets:
        return []
    sql = f"SELECT key, level, earned, t FROM buckets WHERE key IN ({marks(len(buckets))})"  # noqa: S608 - constant names; values are bound
    rows = {
        str(k): (float(level), float(earned), float(t))
        for k, level, earned, t in await cur.all(sql, [b.key for b in buckets])
    }
    out = []
    for b in buckets:
        level, earned, t = rows.get(b.key, (0.0, 0.0, now))
        out.append(admission.decayed(level, earned, t, now, b.tau))
    return out


async def _write_buckets(
    cur: Cursor, buckets: Sequence[Bucket], states: Sequence[admission.Level], now: float
) -> None:
    await cur.many(
        "INSERT INTO buckets (key, level, earned, t, forget_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET level = excluded.level, earned = excluded.earned, "
        "t = excluded.t, forget_at = excluded.forget_at",
        [
            (b.key, st.level, st.earned, now, now + admission.FORGET_AFTER_TAUS * b.tau)
            for b, st in zip(buckets, states, strict=True)
        ],
    )


def hit(rules: Sequence[RateRule], now: float, cost: int, record: bool) -> Body[RateDecision]:
    async def run(cur: Cursor) -> RateDecision:
        refused, tally, keys = await _judge(cur, rules, now, cost)
        if refused is not None:
            return refused
        if record:
            await record_entries(cur, keys, now, cost)
        return allowed_decision(rules, tally, cost if record else 0)

    return run


def admit(
    rules: Sequence[RateRule],
    buckets: Sequence[Bucket],
    now: float,
    pressure: float | None,
    force: bool,
) -> Body[RateDecision]:
    async def run(cur: Cursor) -> RateDecision:
        refused, tally, keys = await _judge(cur, rules, now, 1)
        if refused is not None:
            return refused
        states = await _bucket_states(cur, buckets, now)
        refused = None if force else admission.judge(buckets, states, pressure)
        if refused is not None:
            return refused
        await record_entries(cur, keys, now, 1)
        await _write_buckets(cur, buckets, [admission.after_send(st, 1) for st in states], now)
        return allowed_decision(rules, tally, 1)

    return run


def credit(buckets: Sequence[Bucket], refund: int, now: float) -> Body[None]:
    async def run(cur: Cursor) -> None:
        states = await _bucket_states(cur, buckets, now)
        await _write_buckets(
            cur, buckets, [admission.after_approval(st, refund) for st in states], now
        )

    return run


def release(keys: Sequence[str], at: float, cost: int) -> Body[None]:
    async def run(cur: Cursor) -> None:
        for key in keys:
            removed = await cur.run(rate_log.SQLITE_RELEASE, (key, at, cost))
            if removed > 0:
                await cur.run(rate_log.SQLITE_UNSHIFT, (removed, key, at))

    return run
