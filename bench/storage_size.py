"""Bytes per verification at rest, on SQLite and PostgreSQL, by table and index.

Runs the Verifier in process with default settings (but the per-IP limits, so that many
verifications can come from a few addresses, and an allowlist, so that no fraud rule
or admission scope refuses them): ``-n`` verifications (start, sent, right code:
three events each, each from its own number and IP), at 2 a second of the injected
clock. It measures the store's tables and indexes before, right after (the
verifications live, with their rate entries), and after the purge an hour past
their expiry (what stays for ``event_retention_days``: their events and the event
counts). SQLite: dbstat (pages in use); PostgreSQL: ``pg_total_relation_size`` of
each table (heap, indexes, TOAST) after ``VACUUM``, in a database of its own that
it drops again.

    .venv/bin/python bench/storage_size.py [-n 5000] [--stores sqlite,postgres]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres]

Not a test: it prints figures and asserts nothing. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# bench/http.py sits beside this script: drop this directory from sys.path, or it would
# shadow the standard library's ``http`` package (which httpx, imported by otpguard, needs).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from otpguard.clock import ManualClock  # noqa: E402 - after the sys.path change above
from otpguard.codes import new_secret_hex  # noqa: E402 - after the sys.path change above
from otpguard.config import load_settings  # noqa: E402 - after the sys.path change above
from otpguard.service import Verifier  # noqa: E402 - after the sys.path change above
from otpguard.stores import store_from_url  # noqa: E402 - after the sys.path change above
from otpguard.transports.memory import MemoryTransport  # noqa: E402 - after the sys.path change above

Sizes = dict[str, int]  # table or index -> bytes


def sqlite_sizes(path: Path) -> Callable[[], Awaitable[Sizes]]:
    async def measure() -> Sizes:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return {str(n): int(b) for n, b in conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")}  # fmt: skip

    return measure


def pg_sizes(url: str) -> Callable[[], Awaitable[Sizes]]:
    import psycopg

    async def measure() -> Sizes:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("VACUUM")
            cur = await conn.execute(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            )
            tables = {str(n): int(b) for n, b in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
            )
            indexes = {f"  index {n}": int(b) for n, b in await cur.fetchall()}
            rows = {}
            for table in ("events", "event_counts", "verifications", "rate_log"):
                cur = await conn.execute(
                    f"SELECT COALESCE(SUM(pg_column_size(t.*)), 0) FROM {table} AS t"  # noqa: S608
                )
                row = await cur.fetchone()
                rows[f"  rows of {table}"] = int(row[0]) if row else 0
        return tables | indexes | rows

    return measure


async def verifications(url: str, n: int, measure: Callable[[], Awaitable[Sizes]]) -> Any:
    settings = load_settings(
        env={}, store=url, secret_keys=[new_secret_hex()], transport="memory",
        limit_ip="off", limit_network="off", allowlist=["+44740"],
    )  # fmt: skip
    clock = ManualClock(1_750_000_000.0)
    outbox = MemoryTransport()
    async with Verifier(settings, store_from_url(url), outbox, clock=clock) as v:
        empty = await measure()
        for i in range(n):
            ver = await v.start(
                f"+44740{i:07d}", client_ip=f"10.{i // 62500}.{i // 250 % 250}.{i % 250}"
            )
            await v.check(outbox.last_code(ver.to), verification_id=ver.id)
            clock.advance(0.5)
        live = await measure()
        clock.advance(7200)  # an hour past expiry: the verifications and rate entries go
        await v.purge()
        kept = await measure()
    return empty, live, kept


def per_verification(before: Sizes, after: Sizes, n: int, only: set[str] | None = None) -> float:
    names = [k for k in after if not k.startswith("  ") and (only is None or k in only)]
    return round(sum(after[k] - before.get(k, 0) for k in names) / n, 1)


#: What stays for ``event_retention_days`` (with their indexes).
RETAINED = ("events", "event_counts", "refusal_tallies")


def retained(name: str) -> bool:
    base = name.strip().removeprefix("index ")
    return any(base == t or base.startswith(t + "_") for t in RETAINED) or any(
        base == f"sqlite_autoindex_{t}_1" for t in RETAINED
    )


def report(name: str, n: int, empty: Sizes, live: Sizes, kept: Sizes) -> dict[str, Any]:
    # Tables (PostgreSQL's include their indexes; dbstat names each index apart).
    tables = set(kept) if name == "sqlite" else {k for k in kept if not k.startswith("  ")}
    events = {k for k in tables if retained(k)}
    by_name = {k: round((kept[k] - empty.get(k, 0)) / n, 1) for k in kept}
    figures = {
        "live": per_verification(empty, live, n, tables),
        "retained": per_verification(empty, kept, n, events),
        "by_name": by_name,
    }
    print(f"{name}: {n} verifications")
    print(f"  while live (everything):           {figures['live']:8.1f} B each")
    print(
        f"  kept for event_retention_days:     {figures['retained']:8.1f} B each (events, counts)"
    )
    for k, b in sorted(by_name.items(), key=lambda kv: -kv[1]):
        if b:
            print(f"    {k:34} {b:8.1f} B")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5_000, help="verifications (default 5000)")
    ap.add_argument("--stores", default="sqlite,postgres", help="sqlite,postgres")
    ap.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="a PostgreSQL URL allowed to CREATE DATABASE")  # fmt: skip
    args = ap.parse_args()
    out: dict[str, Any] = {"n": args.n}
    stores = args.stores.split(",")
    if "sqlite" in stores:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "size.db"
            figures = asyncio.run(verifications(f"sqlite:///{db}", args.n, sqlite_sizes(db)))
        out["sqlite"] = report("sqlite", args.n, *figures)
    if "postgres" in stores:
        import psycopg

        name = f"ogbench_size_{os.getpid()}"
        with psycopg.connect(args.pg_admin, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            url = args.pg_admin.rsplit("/", 1)[0] + "/" + name
            figures = asyncio.run(verifications(url, args.n, pg_sizes(url)))
            out["postgres"] = report("postgres", args.n, *figures)
        finally:
            with psycopg.connect(args.pg_admin, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
