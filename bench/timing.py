"""How long a check takes when it must fail: unknown id, wrong code, locked verification,
the right code for another amount (a transaction code, ``purpose.py``).

An attacker who can tell these apart learns which ids (or, with ``to``, which
numbers) have a live verification. This script measures ``Verifier.check`` for
each case, interleaved in random order within one run so drift hits them all
alike, and prints the distributions, the ratio of each median to the baseline
(a wrong code on a pending verification, measured in the same run), and the
probability that one random sample of a case is slower than one of the
baseline (0.50 means indistinguishable by a single sample).

    .venv/bin/python bench/timing.py [-n 2000] [--store sqlite-file|memory] [--by id|to]
    .venv/bin/python bench/timing.py --api v2 [--by id|to]

``--api v2`` measures the Twilio-compatible ``POST /v2/Services/{Sid}/VerificationCheck``
through the ASGI app in process (httpx, no socket): a wrong code, a number with no
pending code, a verification of another service and a locked one.

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py sits beside this script: drop this directory from sys.path, or it would
# shadow the standard library's ``http`` package (which httpx, imported by otpguard, needs).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import contextlib  # noqa: E402 - after the sys.path change above
import random  # noqa: E402 - after the sys.path change above
import statistics  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from collections.abc import Awaitable, Callable  # noqa: E402 - after the sys.path change above

from otpguard.clock import ManualClock  # noqa: E402 - after the sys.path change above
from otpguard.codes import new_secret_hex  # noqa: E402 - after the sys.path change above
from otpguard.config import Settings, load_settings  # noqa: E402 - after the sys.path change above
from otpguard.errors import NotFound  # noqa: E402 - after the sys.path change above
from otpguard.service import Verifier  # noqa: E402 - after the sys.path change above
from otpguard.stores import store_from_url  # noqa: E402 - after the sys.path change above
from otpguard.transports.memory import MemoryTransport  # noqa: E402 - after the sys.path change above

NUMBERS = [f"+4474001{i:05d}" for i in range(100, 400)]


def settings_for(store: str, data_dir: Path) -> Settings:
    return load_settings(
        env={},
        data_dir=data_dir,
        store=store,
        secret_keys=[new_secret_hex()],
        transport="memory",
        log_events=False,
        max_attempts=3,
        # Every limit off: the benchmark measures the check path, not refusals.
        limit_phone="off",
        limit_ip="off",
        limit_network="off",
        limit_prefix="off",
        limit_country="off",
        limit_global="off",
        limit_failed_checks="off",
        limit_ip_failed_checks="off",
        allowlist=["+447"],  # fraud rules skip allowlisted numbers
    )


def wrong(code: str) -> str:
    return ("1" if code[0] != "1" else "2") + code[1:]


async def measure(n: int, store_url: str, data_dir: Path, by: str) -> dict[str, list[float]]:
    settings = settings_for(store_url, data_dir)
    outbox = MemoryTransport()
    clock = ManualClock()
    async with Verifier(settings, store_from_url(store_url), outbox, clock=clock) as v:
        # Locked verifications: every attempt used. Pending ones: a fresh one per wrong check
        # (a verification takes max_attempts - 1 wrong codes before the last one would lock it).
        locked = []
        for i in range(50):
            ver = await v.start(NUMBERS[i])
            for _ in range(settings.max_attempts):
                await v.check(wrong(outbox.last_code(ver.to)), verification_id=ver.id)
            locked.append(ver)
        pending: list[tuple[str, str, str]] = []

        async def refill() -> None:
            for number in NUMBERS[50:]:
                ver = await v.start(number)
                for _ in range(settings.max_attempts - 1):
                    pending.append((ver.id, ver.to, wrong(outbox.last_code(ver.to))))

        # Transaction codes, checked with the right code but another amount.
        pay = {"purpose": "transaction", "amount": "25.00", "currency": "GBP", "payee": "Acme"}
        mismatched: list[tuple[str, str, str]] = []

        async def refill_mismatched() -> None:
            for number in NUMBERS[50:]:
                ver = await v.start(number, **pay)
                for _ in range(settings.max_attempts - 1):
                    mismatched.append((ver.id, ver.to, outbox.last_code(ver.to)))

        async def other_amount() -> None:
            vid, to, code = mismatched.pop()
            other = {**pay, "amount": "25.01"}
            if by == "id":
                assert not (await v.check(code, verification_id=vid, **other)).valid
            else:
                with contextlib.suppress(NotFound):
                    await v.check(code, to=to, **other)

        async def unknown() -> None:
            with contextlib.suppress(NotFound):
                if by == "id":
                    await v.check("493817", verification_id="VE" + "0" * 32)
                else:
                    await v.check("493817", to="+447400999999")

        async def wrong_code() -> None:
            if not pending:
                await refill()
            vid, to, code = pending.pop()
            if by == "id":
                assert not (await v.check(code, verification_id=vid)).valid
            else:  # by number every failure is NotFound, a wrong code too
                with contextlib.suppress(NotFound):
                    await v.check(code, to=to)

        async def on_locked() -> None:
            ver = random.choice(locked)
            if by == "id":
                await v.check("493817", verification_id=ver.id)
            else:  # a locked verification is no longer pending: by number it is "unknown"
                with contextlib.suppress(NotFound):
                    await v.check("493817", to=ver.to)

        cases: dict[str, Callable[[], Awaitable[None]]] = {
            "wrong code (baseline)": wrong_code,
            "unknown id" if by == "id" else "unknown number": unknown,
            "locked": on_locked,
            "right code, other amount": other_amount,
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        await refill_mismatched()
        for fn in cases.values():  # warm-up
            for _ in range(20):
                await fn()
        order = [name for name in cases for _ in range(n)]
        random.shuffle(order)
        for name in order:
            if not pending:
                await refill()  # outside the timed section
            if not mismatched:
                await refill_mismatched()
            t0 = time.perf_counter_ns()
            await cases[name]()
            samples[name].append((time.perf_counter_ns() - t0) / 1000)
    return samples


async def measure_v2(n: int, store_url: str, data_dir: Path, by: str) -> dict[str, list[float]]:
    import base64

    import httpx

    from otpguard.apikeys import create_api_key
    from otpguard.web.app import create_app

    settings = settings_for(store_url, data_dir)
    outbox = MemoryTransport()
    clock = ManualClock()
    verifier = Verifier(settings, store_from_url(store_url), outbox, clock=clock)
    app = create_app(settings, verifier, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        _, key = await create_api_key(verifier.store, "bench", ("verify",), clock())
        token = base64.b64encode(f"og_{key.split('_')[1]}:{key}".encode()).decode()
        auth = {"Authorization": f"Basic {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

            async def service(name: str) -> str:
                r = await http.post("/v2/Services", data={"FriendlyName": name}, headers=auth)
                return str(r.json()["sid"])

            mine, other = await service("Bench"), await service("Other")

            async def start(number: str) -> str:
                form = {"To": number, "Channel": "sms"}
                url = f"/v2/Services/{mine}/Verifications"
                return str((await http.post(url, data=form, headers=auth)).json()["sid"])

            async def check(sid: str, code: str, vid: str, to: str) -> int:
                form = {"Code": code, **({"VerificationSid": vid} if by == "id" else {"To": to})}
                url = f"/v2/Services/{sid}/VerificationCheck"
                return (await http.post(url, data=form, headers=auth)).status_code

            locked = []
            for number in NUMBERS[:50]:
                vid = await start(number)
                for _ in range(settings.max_attempts):
                    await check(mine, wrong(outbox.last_code(number)), vid, number)
                locked.append((vid, number))
            pending: list[tuple[str, str, str]] = []

            async def refill() -> None:
                for number in NUMBERS[50:]:
                    vid = await start(number)
                    for _ in range(settings.max_attempts - 1):
                        pending.append((vid, number, wrong(outbox.last_code(number))))

            async def wrong_code() -> None:
                vid, to, code = pending.pop()
                # By To every failure is 20404, a wrong code too; by sid it is 200.
                assert await check(mine, code, vid, to) == (200 if by == "id" else 404)

            async def no_pending() -> None:
                assert await check(mine, "493817", "VE" + "0" * 32, "+447400999999") == 404

            async def other_service() -> None:
                vid, to, code = pending[-1]  # a live one, asked under the other service
                assert await check(other, code, vid, to) == 404

            async def on_locked() -> None:
                vid, to = random.choice(locked)
                assert await check(mine, "493817", vid, to) in (404, 429)

            cases: dict[str, Callable[[], Awaitable[None]]] = {
                "wrong code (baseline)": wrong_code,
                "no pending code": no_pending,
                "another service": other_service,
                "locked": on_locked,
            }
            samples: dict[str, list[float]] = {name: [] for name in cases}
            await refill()
            for fn in cases.values():  # warm-up
                for _ in range(20):
                    if len(pending) < 2:
                        await refill()
                    await fn()
            order = [name for name in cases for _ in range(n)]
            random.shuffle(order)
            for name in order:
                if len(pending) < 2:
                    await refill()  # outside the timed section
                t0 = time.perf_counter_ns()
                await cases[name]()
                samples[name].append((time.perf_counter_ns() - t0) / 1000)
    return samples


def slower_probability(a: list[float], b: list[float]) -> float:
    """P(random sample of a > random sample of b), ties counted half (Mann-Whitney AUC)."""
    merged = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    rank_sum = 0.0
    i = 0
    while i < len(merged):
        j = i
        while j < len(merged) and merged[j][0] == merged[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2
        rank_sum += sum(avg_rank for k in range(i, j) if merged[k][1] == 0)
        i = j
    u = rank_sum - len(a) * (len(a) + 1) / 2
    return u / (len(a) * len(b))


def report(samples: dict[str, list[float]]) -> None:
    base_name = next(iter(samples))
    base = samples[base_name]
    base_median = statistics.median(base)
    print(
        f"{'case':24} {'n':>6} {'min':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8}"
        f" {'p50/base':>9} {'P(>base)':>9}"
    )
    for name, xs in samples.items():
        q = statistics.quantiles(xs, n=100)
        print(
            f"{name:24} {len(xs):>6} {min(xs):>8.1f} {q[49]:>8.1f} {q[89]:>8.1f} {q[98]:>8.1f}"
            f" {statistics.fmean(xs):>8.1f} {statistics.median(xs) / base_median:>9.2f}"
            f" {slower_probability(xs, base):>9.2f}"
        )
    print("times in microseconds; P(>base) = 0.50 means one sample cannot tell the case apart")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=2000, help="samples per case")
    p.add_argument("--store", choices=["sqlite-file", "memory"], default="sqlite-file")
    p.add_argument("--by", choices=["id", "to"], default="id", help="check by id or by number")
    p.add_argument("--api", choices=["verifier", "v2"], default="verifier", help="what is timed")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = "sqlite://:memory:" if args.store == "memory" else f"sqlite:///{tmp}/bench.db"
        what = "Verifier.check" if args.api == "verifier" else "POST /v2/.../VerificationCheck"
        print(f"{what}, {args.n} samples per case, store {args.store}, by {args.by}")
        run = measure if args.api == "verifier" else measure_v2
        report(asyncio.run(run(args.n, url, Path(tmp), args.by)))


if __name__ == "__main__":
    main()
