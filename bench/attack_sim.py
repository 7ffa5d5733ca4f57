"""SMS-pumping simulator: real servers, simulated days, one table of what got through.

    .venv/bin/python bench/attack_sim.py                       # every scenario
    .venv/bin/python bench/attack_sim.py --scenarios block,legit --speed 30
    .venv/bin/python bench/attack_sim.py --quick                # short smoke run

Each scenario gets a fresh server (``simserver.py``: the app ``otpguard serve``
builds, default settings, a new SQLite file, the file transport) whose clock runs
``--speed`` times faster than the wall clock (``--fast-speed`` for the scenarios
without human users), and drives it over HTTP on 127.0.0.1 with an attacker and
human users (``simactors.py``). Scenarios with returning customers first build that
population: batches of users who log in and type their code, an hour apart, then
the clock jumps a day ahead. Prints a table, the refusals by reason, and one JSON
object as the last line.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` package: look for this
# directory's modules after the standard library, not before it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import functools  # noqa: E402 - after the sys.path change above
import json  # noqa: E402 - after the sys.path change above
import random  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from dataclasses import dataclass, replace  # noqa: E402 - after the sys.path change above
from typing import Any  # noqa: E402 - after the sys.path change above

import httpx  # noqa: E402 - after the sys.path change above
from simactors import CODE_WAIT, Ctx, Tally, attacker, drain, human, stream  # noqa: E402 - after the sys.path change above
from simlib import (  # noqa: E402 - after the sys.path change above
    SITE_KEY,
    SITE_SECRET,
    FakeSiteverify,
    Phone,
    SimClock,
    SimServer,
    attacker_ip,
    block_number,
    gb_mobile,
)

MIN, HOUR, DAY = 60.0, 3600.0, 86400.0
CUTOFF_WINDOW, CUTOFF_SHARE = 10, 0.05  # minutes, share of attempts that still get through
RECOVERY_WINDOW, RECOVERY_SHARE = 5, 0.05
BATCH, BATCH_RATE = 250, 50.0  # returning-customer history: users per batch, per minute


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    attack: str | None = None  # "block", "country" or "drip"
    attack_rate: float = 60.0  # attacker starts per simulated minute
    pump_from: float = 0.0
    pump_until: float = 0.0
    legit_rate: float = 0.0  # human arrivals per simulated minute
    returning_share: float = 0.0
    duration: float = HOUR
    challenge: bool = False


def scenarios(quick: bool, attack_rate: float, pump_hours: float) -> dict[str, Scenario]:
    day = 30 * MIN if quick else pump_hours * HOUR
    drip = 30 * MIN if quick else 6 * HOUR
    busy = 10 * MIN if quick else HOUR
    pre, pump, after = (2 * MIN, 8 * MIN, 10 * MIN) if quick else (10 * MIN, 30 * MIN, 60 * MIN)
    a = attack_rate
    out = [
        Scenario("block", "one-block pump, rotating /24s", "block", a, 0, day, duration=day),
        Scenario("country", "GB-wide pump, rotating /24s", "country", a, 0, day, duration=day),
        Scenario("drip", "slow drip, 3/min GB-wide", "drip", 3.0, 0, drip, duration=drip),
        Scenario("legit", "95 new users/min, no attack", legit_rate=95.0, duration=busy),
        Scenario(
            "legit+challenge",
            "95 new users/min, no attack, challenge provider set",
            legit_rate=95.0,
            duration=busy,
            challenge=True,
        ),
    ]
    for attack in ("block", "country"):
        base = Scenario(
            f"legit+{attack}",
            f"95 users/min (25 % returning) + {attack} pump",
            attack,
            a,
            pre,
            pre + pump,
            95.0,
            0.25,
            pre + pump + after,
        )
        out += [base, replace(base, name=base.name + "+challenge", challenge=True)]
    return {s.name: s for s in out}


def attack_number(kind: str, rng: random.Random) -> str:
    return block_number(rng) if kind == "block" else gb_mobile(rng)


async def warm_up(ctx: Ctx, server: SimServer, size: int) -> list[str]:
    """Returning customers: ``size`` numbers that logged in and typed their code on
    earlier days (batches an hour apart, then a day skipped), so the scenario's own
    hourly and daily windows start empty."""
    pool: list[str] = []
    ctx.tally = Tally()

    async def pick(numbers: list[str], i: int, due: float) -> None:
        if await human(ctx, "history", numbers[i], due, always_types=True):
            pool.append(numbers[i])

    for _ in range(size // BATCH + 10):  # bounded, whatever the server answers
        if len(pool) >= size:
            break
        numbers = [gb_mobile(ctx.rng) for _ in range(min(BATCH, size - len(pool)))]
        had = len(pool)
        ctx.origin = ctx.clock.now()
        span = len(numbers) * MIN / BATCH_RATE
        await stream(ctx, BATCH_RATE, 0, span, functools.partial(pick, numbers), poisson=False)
        await drain(ctx, within=(CODE_WAIT + 60) / ctx.clock.speed + 30)
        if len(pool) == had:
            break  # nobody got through: do not loop forever
        await server.jump(max(0.0, HOUR - ctx.rel()))
    await server.jump(DAY + HOUR)
    return pool


async def run(sc: Scenario, speed: float, rng: random.Random, root: Path) -> dict[str, Any]:
    clock = SimClock(speed)
    settings: dict[str, str] = {}
    note = ""
    async with FakeSiteverify().running() as fake:
        if sc.challenge:
            settings = {
                "OTPGUARD_CHALLENGE_PROVIDER": "turnstile",
                "OTPGUARD_CHALLENGE_SITE_KEY": SITE_KEY,
                "OTPGUARD_CHALLENGE_SECRET": SITE_SECRET,
                "OTPGUARD_CHALLENGE_VERIFY_URL": fake.url,
            }
        server = SimServer(root / sc.name, clock, settings)
        try:
            await asyncio.to_thread(server.start)
        except RuntimeError as exc:
            if not (sc.challenge and "CHALLENGE" in str(exc)):
                raise
            note = "this server does not know OTPGUARD_CHALLENGE_*: ran without a provider"
            server = SimServer(root / (sc.name + "-noprovider"), clock, {})
            await asyncio.to_thread(server.start)
        try:
            return await drive(sc, server, clock, rng, fake, note)
        finally:
            server.stop()


async def drive(
    sc: Scenario, server: SimServer, clock: SimClock, rng: random.Random, fake: Any, note: str
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, timeout=30.0, limits=limits
    ) as http:
        phone = Phone(server.outbox)
        stop = asyncio.Event()
        reader = asyncio.create_task(phone.run(stop))
        ctx = Ctx(http, clock, phone, Tally(), rng, challenge=sc.challenge and not note)
        expected = sc.legit_rate * sc.duration / MIN * sc.returning_share
        pool = await warm_up(ctx, server, int(expected * 1.1) + 1) if expected else []
        history = ctx.tally
        ctx.tally, ctx.origin = Tally(), clock.now()
        real0 = time.monotonic()
        returning = iter(pool)

        async def legit(_: int, due: float) -> None:
            number = next(returning, None) if rng.random() < sc.returning_share else None
            kind = "returning" if number else "new"
            await human(ctx, kind, number or gb_mobile(rng), due)

        async def pump(i: int, due: float) -> None:
            await attacker(ctx, attack_number(sc.attack or "", rng), attacker_ip(i, rng), due)

        await asyncio.gather(
            stream(ctx, sc.legit_rate, 0, sc.duration, legit, poisson=True),
            stream(
                ctx,
                sc.attack_rate if sc.attack else 0,
                sc.pump_from,
                sc.pump_until,
                pump,
                poisson=False,
            ),
        )
        await drain(ctx, within=(CODE_WAIT + 60) / clock.speed + 60)
        real = time.monotonic() - real0
        stop.set()
        await reader
    served = sum(ctx.tally.served.values()) + ctx.tally.sent + sum(history.served.values())
    return summarize(sc, ctx.tally, clock.speed, real, note) | {
        "returning_pool": len(pool),
        "starts_answered_201": served,
        "outbox_messages": phone.messages,
        "siteverify_calls": fake.calls,
    }


def cutoff(t: Tally, sc: Scenario) -> tuple[int | None, int]:
    """The first minute boundary of the pump after which, for ten minutes, under 5 % of
    the attacker's starts got through; and the SMS it got before that boundary."""
    first, last = int(sc.pump_from // MIN), int(sc.pump_until // MIN)
    for m in range(first + 1, last):
        span = [t.minutes[k] for k in range(m, min(m + CUTOFF_WINDOW, last)) if k in t.minutes]
        att, sent = sum(s[0] for s in span), sum(s[1] for s in span)
        if att and sent < CUTOFF_SHARE * att:
            return m - first, sum(v[1] for k, v in t.minutes.items() if k < m)
    return None, t.sent


def recovery(t: Tally, sc: Scenario) -> int | None:
    """Minutes after the pump stopped until, over five minutes, under 5 % of new users
    were refused (None: not within the scenario)."""
    stop, end = int(sc.pump_until // MIN), int(sc.duration // MIN)
    for m in range(stop, end - RECOVERY_WINDOW + 1):
        span = [t.new_minutes[k] for k in range(m, m + RECOVERY_WINDOW) if k in t.new_minutes]
        users, refused = sum(s[0] for s in span), sum(s[1] for s in span)
        if users and refused < RECOVERY_SHARE * users:
            return m - stop
    return None


def summarize(sc: Scenario, t: Tally, speed: float, real: float, note: str) -> dict[str, Any]:
    pump = sc.pump_until - sc.pump_from
    first = int(sc.pump_from // MIN)
    cut, before = cutoff(t, sc) if sc.attack else (None, 0)
    return {
        "scenario": sc.name,
        "what": sc.what,
        "simulated_s": sc.duration,
        "speed": speed,
        "real_s": round(real, 1),
        "max_lag_s": round(t.max_lag, 1),
        "attacker_starts": t.attempts,
        "attacker_sms": t.sent,
        "attacker_sms_10min": sum(v[1] for k, v in t.minutes.items() if k < first + 10),
        # Daily windows cap what gets through: a shorter pump is not scaled up to a day.
        "attacker_sms_day": (
            sum(v[1] for k, v in t.minutes.items() if k < first + 24 * 60)
            if sc.attack and not sc.legit_rate and pump >= DAY
            else None
        ),
        "cutoff_min": cut,
        "sms_before_cutoff": before,
        "attacker_refusals": dict(t.reasons.most_common()),
        **{
            f"{k}_{kind}": getattr(t, k)[kind]
            for k in ("users", "served", "refused", "challenged", "approved")
            for kind in ("new", "returning")
        },
        "user_refusals": dict(t.user_reasons.most_common()),
        "served_again_after_min": recovery(t, sc) if sc.attack and sc.legit_rate else None,
        "no_code": t.no_code,
        "errors": dict(t.errors),
        "note": note,
    }


def _pct(n: int, of: int) -> str:
    return f"{n} ({100 * n / of:.1f} %)" if of else "0"


def _span(s: float) -> str:
    return f"{s / HOUR:g} h" if s >= 2 * HOUR else f"{s / MIN:g} min"


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "scenario",
        "simulated",
        "speed",
        "attacker starts",
        "SMS to attacker",
        "in first 10 min",
        "per day",
        "cut-off after",
        "SMS before cut-off",
        "new users",
        "new refused",
        "new challenged",
        "returning",
        "ret. refused",
        "ret. challenged",
        "approved",
        "served again after stop",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        attack = r["attacker_starts"] > 0 or r["attacker_sms_day"] is not None
        day = r["attacker_sms_day"]
        again = r["served_again_after_min"]
        n, ret = r["users_new"], r["users_returning"]
        cells = [
            r["scenario"],
            _span(r["simulated_s"]),
            f"{r['speed']:g}x",
            str(r["attacker_starts"]),
            str(r["attacker_sms"]),
            str(r["attacker_sms_10min"]) if attack else "-",
            "-" if day is None else str(day),
            (
                "-"
                if not attack
                else "never"
                if r["cutoff_min"] is None
                else f"{r['cutoff_min']} min"
            ),
            str(r["sms_before_cutoff"]) if attack else "-",
            str(n),
            _pct(r["refused_new"], n),
            _pct(r["challenged_new"], n),
            str(ret),
            _pct(r["refused_returning"], ret),
            _pct(r["challenged_returning"], ret),
            _pct(r["approved_new"] + r["approved_returning"], n + ret),
            (
                "-"
                if not (attack and n)
                else "not within the run"
                if again is None
                else f"{again} min"
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reasons(rows: list[dict[str, Any]]) -> str:
    out = ["Refusals by reason (code:rule or code:reason):"]
    for r in rows:
        for who, key in (("attacker", "attacker_refusals"), ("users", "user_refusals")):
            if r[key]:
                out.append(
                    f"  {r['scenario']:<24} {who:<8} "
                    + ", ".join(f"{k} {v}" for k, v in r[key].items())
                )
        extra = f"  {r['scenario']:<24} real {r['real_s']} s, max lag {r['max_lag_s']} sim s"
        if r["errors"]:
            extra += ", errors " + ", ".join(f"{k} {v}" for k, v in r["errors"].items())
        out.append(extra + (f"; {r['note']}" if r["note"] else ""))
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    table_ = scenarios(args.quick, args.attack_rate, args.pump_hours)
    names = list(table_) if args.scenarios == "all" else args.scenarios.split(",")
    unknown = [n for n in names if n not in table_]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(table_)}")
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="otpguard-sim-") as tmp:
        for name in names:
            sc = table_[name]
            speed = args.speed if sc.legit_rate else args.fast_speed
            print(f"running {name} ({_span(sc.duration)} at {speed:g}x)...", file=sys.stderr)
            rows.append(await run(sc, speed, rng, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default="all", help="comma-separated names, or all")
    p.add_argument("--speed", type=float, default=30.0, help="clock speed with human users")
    p.add_argument("--fast-speed", type=float, default=240.0, help="clock speed, attacker alone")
    p.add_argument("--attack-rate", type=float, default=60.0, help="pump starts per minute")
    p.add_argument(
        "--pump-hours", type=float, default=24.0, help="length of the attacker-alone pumps"
    )
    p.add_argument("--quick", action="store_true", help="short durations: a smoke run")
    p.add_argument("--seed", type=int, default=12)
    args = p.parse_args(argv)
    rows = asyncio.run(main_async(args))
    print(
        f"Default settings, fresh install per scenario; attack pumps at {args.attack_rate:g}/min."
    )
    print(table(rows))
    print()
    print(reasons(rows))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
