"""PostgreSQL's own CPU per request, and where inside the server-side functions it goes.

    .venv/bin/python bench/pg_cost.py              # 300 pairs after 20 warm-up pairs
    .venv/bin/python bench/pg_cost.py -n 1000 --explain

The engine runs in process (a manual clock, the memory transport, codes read from
its outbox as a phone would) on a PostgreSQL database of this run's own, pairs one
after another: a start, a wrong-code check, a right-code check. Measured on the
server side:

* the CPU time (user + system, from ``/proc/<pid>/stat``) of every backend serving
  the run's database, per pair, and the same for the same number of ``SELECT 1``
  round trips on the same pool: the floor one round trip costs the server;
* ``pg_stat_user_functions`` (``track_functions = all``, set on the run's database
  only): calls, total and self time of each otpguard function per pair;
* with ``--explain``, ``auto_explain`` on the run's database (nested statements,
  ``log_analyze``) and the statements of the functions that took the most time in
  the server log, summed by statement text. This slows the server: compare its
  figures with each other, not with the CPU lines.

The CPU figures need this process to see the backends' ``/proc`` (same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would shadow the standard library's ``http`` package: bench/ goes
# last (for procs.py), after the standard library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

import psycopg  # noqa: E402 - after the sys.path change above
from procs import cpu_seconds  # noqa: E402 - after the sys.path change above
from tests.backends import PG_ADMIN_URL, PG_SERVER, create_database, drop_databases  # noqa: E402 - after the sys.path change above
from tests.conftest import make_settings  # noqa: E402 - after the sys.path change above

from otpguard.clock import ManualClock  # noqa: E402 - after the sys.path change above
from otpguard.service import Verifier  # noqa: E402 - after the sys.path change above
from otpguard.stores import store_from_url  # noqa: E402 - after the sys.path change above
from otpguard.transports.memory import MemoryTransport  # noqa: E402 - after the sys.path change above


def backends(admin: psycopg.Connection[Any], db: str) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (db,)
    ).fetchall()
    return [int(r[0]) for r in rows]


async def pairs(verifier: Verifier, outbox: MemoryTransport, clock: ManualClock, n: int) -> None:
    rng = random.Random(n)
    for _ in range(n):
        to = f"+447{rng.choice('45')}{rng.randrange(10**8):08d}"
        ip = f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        v = await verifier.start(to, client_ip=ip)
        code = outbox.last_code(to)
        wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
        clock.advance(5)
        await verifier.check(wrong, verification_id=v.id, client_ip=ip)
        await verifier.check(code, verification_id=v.id, client_ip=ip)
        clock.advance(5)


async def floor(store: Any, n: int) -> None:
    """``n`` round trips of ``SELECT 1`` through the store's own pool."""
    for _ in range(n):
        async with store._pool.connection() as conn:
            await conn.execute("SELECT 1")


def function_stats(admin: psycopg.Connection[Any], db: str) -> dict[str, tuple[int, float, float]]:
    with psycopg.connect(f"{PG_SERVER}/{db}") as c:
        rows = c.execute(
            "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions"
        ).fetchall()
    return {r[0]: (int(r[1]), float(r[2]), float(r[3])) for r in rows}


def explained(log_path: Path, offset: int) -> list[tuple[float, int, str]]:
    """(total ms, count, statement) of the nested statements auto_explain logged."""
    text = log_path.read_bytes()[offset:].decode(errors="replace")
    found: dict[str, list[float]] = collections.defaultdict(list)
    for m in re.finditer(
        r"duration: ([0-9.]+) ms\s+plan:\s*\n\s*Query Text: (.*?)\n\s*(?:[A-Z].*?\(cost|Result)",
        text,
        flags=re.S,
    ):
        query = " ".join(m.group(2).split())[:160]
        found[query].append(float(m.group(1)))
    return sorted(((sum(v), len(v), q) for q, v in found.items()), reverse=True)


async def run(args: argparse.Namespace) -> None:
    url = create_database("pgcost")
    db = url.rsplit("/", 1)[1].split("?", 1)[0]
    admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    admin.execute(f"ALTER DATABASE \"{db}\" SET track_functions = 'all'")
    for setting in args.set:
        admin.execute(f'ALTER DATABASE "{db}" SET {setting}')
    log_path, offset = Path(), 0
    if args.explain:
        for setting in (
            "session_preload_libraries = 'auto_explain'",
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_analyze = on",
            "auto_explain.log_timing = on",
        ):
            admin.execute(f'ALTER DATABASE "{db}" SET {setting}')
        log_path = Path(args.log)
        offset = log_path.stat().st_size
    if args.plain_lists:  # the baseline: psycopg's own list dumper on every connection
        from otpguard.stores import postgres

        async def plain(conn: Any) -> None:
            return None

        postgres._configure = plain  # type: ignore[assignment]  # the pool's configure
    settings = make_settings(
        Path(tempfile.mkdtemp()), store=url, allowed_countries=["GB", "GG", "IM", "JE"]
    )
    clock, outbox = ManualClock(), MemoryTransport()
    store = store_from_url(settings.store_url)
    verifier = Verifier(settings, store, outbox, clock=clock)
    await verifier.open()
    try:
        await pairs(verifier, outbox, clock, args.warmup)
        await floor(store, 20)
        await asyncio.sleep(args.settle)  # the warm-up's statistics flushed before the reset
        with psycopg.connect(url) as c:
            c.execute("SELECT pg_stat_reset()")
        pids = backends(admin, db)
        before, t0, own0 = cpu_seconds(pids), time.perf_counter(), time.process_time()
        await pairs(verifier, outbox, clock, args.n)
        used, wall = cpu_seconds(backends(admin, db)) - before, time.perf_counter() - t0
        own = time.process_time() - own0
        # A backend flushes its function statistics when idle, at most once a second
        # and at the latest 10 s after its last transaction.
        await asyncio.sleep(args.settle)
        stats = function_stats(admin, db)
        trips = args.n * 6  # two round trips per request (bench/roundtrips.py)
        before = cpu_seconds(backends(admin, db))
        await floor(store, trips)
        floor_used = cpu_seconds(backends(admin, db)) - before
    finally:
        await verifier.aclose()
        admin.close()
        drop_databases()
    print(f"{args.n} pairs in {wall:.2f} s ({args.n / wall:.0f} pairs/s, one at a time)")
    print(f"PostgreSQL CPU per pair:          {used / args.n * 1000:7.3f} ms")
    print(f"this process's CPU per pair:      {own / args.n * 1000:7.3f} ms")
    print(
        f"  the floor, {trips // args.n} x SELECT 1 per pair: {floor_used / args.n * 1000:7.3f} ms"
        f" ({floor_used / trips * 1e6:.0f} us a round trip)"
    )
    print(f"{'function':<26} {'calls/pair':>10} {'total ms/pair':>13} {'self ms/pair':>12}")
    for name, (calls, total, own) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:<26} {calls / args.n:>10.2f} {total / args.n:>13.3f} {own / args.n:>12.3f}")
    print(
        json.dumps(
            {
                "pairs": args.n,
                "postgres_cpu_ms": used / args.n * 1000,
                "client_cpu_ms": own / args.n * 1000,
                "floor_ms": floor_used / args.n * 1000,
                "functions": {name: list(row) for name, row in stats.items()},
            }
        )
    )
    if args.explain:
        print("\nnested statements by total time (auto_explain, log_analyze on):")
        for total, count, query in explained(log_path, offset)[:25]:
            print(f"{total / args.n:8.3f} ms/pair {count / args.n:6.2f}/pair  {query}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="pairs measured")
    parser.add_argument("--warmup", type=int, default=20, help="pairs before those")
    parser.add_argument("--explain", action="store_true", help="auto_explain the functions")
    parser.add_argument(
        "--plain-lists",
        action="store_true",
        help="send lists with psycopg's own dumper (the baseline of postgres_arrays)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=11.0,
        help="seconds to wait for the backends to flush their function statistics",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="a setting for the run's database, e.g. 'plan_cache_mode = force_generic_plan'",
    )
    parser.add_argument(
        "--log",
        default="/var/log/postgresql/postgresql-15-main.log",
        help="the server's log, where auto_explain writes (Debian's place by default)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
