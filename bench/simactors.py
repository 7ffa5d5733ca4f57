"""The simulator's actors: human users and the attacker, over HTTP only.

A human starts a verification for their own number from their own IP. If the server
answers 428 ``challenge_required`` they are counted as challenged and, when a
challenge provider is configured, solve it (a ``pass-...`` token that the fake
siteverify accepts) and repeat the same start with ``challenge_token``. 90 % of those
who get a code read it from the outbox (their phone) and type it 3-30 simulated
seconds later; 10 % walk away. The attacker starts verifications it never checks and
has no challenge token.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
from simlib import Phone, SimClock, human_ip

TYPE_SHARE = 0.9
TYPE_DELAY = (3.0, 30.0)  # simulated seconds from the message arriving to the check
CODE_WAIT = 120.0  # simulated seconds a human waits for a message before giving up
MAX_PENDING = 256  # actors in flight at once per stream, humans waiting for a code included


@dataclass
class Tally:
    """What one scenario counted. Times are simulated seconds from the scenario start."""

    attempts: int = 0
    sent: int = 0
    minutes: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    reasons: Counter[str] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    challenged: Counter[str] = field(default_factory=Counter)
    approved: Counter[str] = field(default_factory=Counter)
    user_reasons: Counter[str] = field(default_factory=Counter)
    new_minutes: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    no_code: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # transport errors and 5xx
    max_lag: float = 0.0


@dataclass
class Ctx:
    http: httpx.AsyncClient
    clock: SimClock
    phone: Phone
    tally: Tally
    rng: random.Random
    challenge: bool
    origin: float = 0.0  # simulated epoch of the scenario start
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(64))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def rel(self) -> float:
        return self.clock.now() - self.origin


def reason_of(status: int, body: dict[str, Any]) -> str:
    raw = body.get("error")
    err: dict[str, Any] = raw if isinstance(raw, dict) else {}
    code = str(err.get("code", f"http_{status}"))
    detail = err.get("rule") or err.get("reason")
    return f"{code}:{detail}" if detail else code


async def post(
    ctx: Ctx, path: str, body: dict[str, Any], due: float | None = None
) -> tuple[int, dict[str, Any]]:
    """POST; ``due`` (simulated seconds from the scenario start) measures how late the
    request went out behind its schedule."""
    async with ctx.slots:
        if due is not None:
            ctx.tally.max_lag = max(ctx.tally.max_lag, ctx.rel() - due)
        try:
            r = await ctx.http.post(path, json=body)
        except httpx.HTTPError as exc:
            ctx.tally.errors[type(exc).__name__] += 1
            return 0, {"error": {"code": f"transport_error:{type(exc).__name__}"}}
    try:
        data = r.json()
    except ValueError:
        data = {}
    if r.status_code >= 500:
        ctx.tally.errors[f"http_{r.status_code}"] += 1
    return r.status_code, data if isinstance(data, dict) else {}


async def start(
    ctx: Ctx, to: str, ip: str, token: str | None = None, due: float | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"to": to, "channel": "sms", "client_ip": ip}
    if token is not None:
        body["challenge_token"] = token
    return await post(ctx, "/v1/verifications", body, due)


async def human(ctx: Ctx, kind: str, to: str, due: float, *, always_types: bool = False) -> bool:
    """One real user logging in; True once approved."""
    t = ctx.tally
    ip = human_ip(ctx.rng)
    t.users[kind] += 1
    status, body = await start(ctx, to, ip, due=due)
    minute = int(ctx.rel() // 60)  # when the server answered
    if status == 428:
        t.challenged[kind] += 1
        if ctx.challenge:
            status, body = await start(ctx, to, ip, token=f"pass-{ctx.rng.getrandbits(64):016x}")
    if kind == "new":
        t.new_minutes[minute][0] += 1
    if status != 201:
        t.refused[kind] += 1
        t.user_reasons[reason_of(status, body)] += 1
        if kind == "new":
            t.new_minutes[minute][1] += 1
        return False
    t.served[kind] += 1
    if not always_types and ctx.rng.random() >= TYPE_SHARE:
        return False
    code = await ctx.phone.code_for(str(body["id"]), within=CODE_WAIT / ctx.clock.speed)
    if code is None:
        t.no_code += 1
        return False
    await ctx.clock.sleep(ctx.rng.uniform(*TYPE_DELAY))
    status, body = await post(
        ctx, "/v1/verifications/check", {"id": body["id"], "code": code, "client_ip": ip}
    )
    if status == 200 and body.get("valid") is True:
        t.approved[kind] += 1
        return True
    t.user_reasons[f"check:{reason_of(status, body) if status != 200 else body.get('status')}"] += 1
    return False


async def attacker(ctx: Ctx, to: str, ip: str, due: float) -> None:
    """One pumped start: the attacker never reads or types the code."""
    t = ctx.tally
    t.attempts += 1
    status, body = await start(ctx, to, ip, due=due)
    minute = int(ctx.rel() // 60)  # when the server answered
    t.minutes[minute][0] += 1
    if status == 201:
        t.sent += 1
        t.minutes[minute][1] += 1
    else:
        t.reasons[reason_of(status, body)] += 1


async def stream(
    ctx: Ctx,
    per_minute: float,
    t_from: float,
    t_until: float,
    spawn: Callable[[int, float], Coroutine[Any, Any, None]],
    *,
    poisson: bool,
) -> None:
    """Spawn ``spawn(i, due)`` at ``per_minute`` over [t_from, t_until) simulated seconds
    from the scenario start: Poisson arrivals for humans, a steady beat for a bot.

    At most ``MAX_PENDING`` actors of this stream wait for a connection (humans
    waiting for their code do not starve a concurrent attacker): when the server (or
    this machine) cannot keep up, arrivals come late (``max_lag``) instead of queueing
    without bound, a steady beat that fell a minute behind skips the starts it missed
    rather than firing them late, and the stream still ends at ``t_until`` on the
    server's clock, so fewer starts than scheduled are made, never starts after the
    scenario."""
    if per_minute <= 0:
        return
    t = t_from + (ctx.rng.expovariate(per_minute / 60) if poisson else 0.0)
    i = 0
    mine: set[asyncio.Task[None]] = set()
    while t < t_until and ctx.rel() < t_until:
        await ctx.clock.sleep_until(ctx.origin + t)
        while len(mine) >= MAX_PENDING:
            await asyncio.wait(set(mine), return_when=asyncio.FIRST_COMPLETED)
        if ctx.rel() >= t_until:
            return
        if not poisson and ctx.rel() - t > 60:
            t = ctx.rel()  # a bot that fell behind fires now, not its backlog
        task = asyncio.create_task(spawn(i, t))
        ctx.tasks.add(task)
        mine.add(task)
        task.add_done_callback(ctx.tasks.discard)
        task.add_done_callback(mine.discard)
        i += 1
        t += ctx.rng.expovariate(per_minute / 60) if poisson else 60 / per_minute


async def drain(ctx: Ctx, within: float) -> None:
    """Wait for every actor still running (at most ``within`` real seconds)."""
    if ctx.tasks:
        _, pending = await asyncio.wait(set(ctx.tasks), timeout=within)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
