"""What a flood of refused starts costs, and what one verification costs at rest.

Runs the Verifier in process over a SQLite file (``--store`` for another backend's
URL; the byte figures are SQLite's), with event logging on and written to a file:

1. **Baseline**: ``--pairs`` verifications (start, right-code check) from distinct
   numbers and IPs, the figures an operator would see on a quiet day. It prints
   bytes per verification: the whole database growth, and what stays once the
   verifications themselves are purged (their events, kept ``event_retention_days``),
   with the rows per table and the bytes per table and index (SQLite's ``dbstat``).
   The admin stats (1 day) and one alert evaluation are timed on this database.
2. **Flood**: ``-n`` starts with one number from one IP (a script replaying one
   request with one API key), all but the first three refused by the per-number
   limit. It prints what the flood added (database bytes, event rows, aggregate rows,
   log bytes) and the same two timings again, measured in the same run.

    .venv/bin/python bench/flood.py [-n 61000] [--pairs 2000]

3. **Scaling** (``--scale 500,50000``, run instead of the two above): the admin stats
   (1 day) and one alert evaluation timed after the first number of events and again
   after the second, in one run, with the time reading those events would take
   (``load_activity``, what the figures were computed from before the event counts).
   The traffic is rounds of one verification (start, sent, right code: 3 events,
   each from a new number and IP) and two refused starts of one number (every
   refusal is counted; the first of a minute is also stored).

Not a test: it prints figures and asserts nothing. The last line is one JSON object.
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
import json  # noqa: E402 - after the sys.path change above
import logging  # noqa: E402 - after the sys.path change above
import sqlite3  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from typing import Any  # noqa: E402 - after the sys.path change above

from otpguard.alerts import AlertEvaluator  # noqa: E402 - after the sys.path change above
from otpguard.clock import ManualClock  # noqa: E402 - after the sys.path change above
from otpguard.codes import new_secret_hex  # noqa: E402 - after the sys.path change above
from otpguard.config import load_settings  # noqa: E402 - after the sys.path change above
from otpguard.errors import RateLimited  # noqa: E402 - after the sys.path change above
from otpguard.service import Verifier  # noqa: E402 - after the sys.path change above
from otpguard.sinks import Dispatcher  # noqa: E402 - after the sys.path change above
from otpguard.stats import load_activity, stats_for  # noqa: E402 - after the sys.path change above
from otpguard.stores import store_from_url  # noqa: E402 - after the sys.path change above
from otpguard.transports.memory import MemoryTransport  # noqa: E402 - after the sys.path change above


def db_bytes(path: Path) -> int:
    """Bytes in the database's tables and indexes (dbstat; free pages and the WAL's
    spare room are not counted, committed WAL pages are)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT SUM(pgsize) FROM dbstat").fetchone()[0])


def table_figures(path: Path) -> dict[str, Any]:
    """Rows per table and bytes per table or index (dbstat), for the tables that grow."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}  # noqa: S608
        sizes = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    return {"rows": rows, "bytes": sizes}


async def timed_views(v: Verifier, alerts: AlertEvaluator) -> dict[str, float]:
    t0 = time.perf_counter()
    await stats_for(v.store, v.settings.alerts, v.clock(), 86400)
    t1 = time.perf_counter()
    await alerts.evaluate()
    t2 = time.perf_counter()
    return {"stats_1d_s": round(t1 - t0, 4), "alerts_s": round(t2 - t1, 4)}


async def run(n: int, pairs: int, store_url: str | None, data_dir: Path) -> dict[str, Any]:
    db = data_dir / "flood.db"
    url = store_url or f"sqlite:///{db}"
    settings = load_settings(
        env={},
        data_dir=data_dir,
        store=url,
        secret_keys=[new_secret_hex()],
        transport="memory",
        log_events=True,
        limit_ip="off",
        limit_network="off",
        allowlist=["+44740"],  # the baseline's numbers: no fraud rule or admission refuses
    )
    log_file = data_dir / "events.log"
    handler = logging.FileHandler(log_file)
    events_log = logging.getLogger("otpguard.events")
    events_log.addHandler(handler)
    events_log.setLevel(logging.INFO)
    events_log.propagate = False
    clock = ManualClock(1_750_000_000.0)
    outbox = MemoryTransport()
    out: dict[str, Any] = {"n": n, "pairs": pairs, "store": url.split(":")[0]}
    async with Verifier(settings, store_from_url(url), outbox, clock=clock) as v:
        alerts = AlertEvaluator(v, Dispatcher([]))
        empty = db_bytes(db) if store_url is None else 0
        for i in range(pairs):
            ver = await v.start(f"+44740{i:07d}", client_ip=f"10.0.{i // 250}.{i % 250}")
            await v.check(outbox.last_code(ver.to), verification_id=ver.id)
            clock.advance(0.5)
        handler.flush()
        base_log = log_file.stat().st_size
        if store_url is None:
            grown = db_bytes(db)
            clock.advance(7200)  # the verifications leave (an hour past expiry), events stay
            await v.purge()
            kept = db_bytes(db)
            out["per_verification"] = {
                "db_bytes_while_live": round((grown - empty) / max(1, pairs)),
                "db_bytes_kept_with_events": round((kept - empty) / max(1, pairs)),
                "log_bytes": round(base_log / max(1, pairs)),
                "tables": table_figures(db),
            }
        out["baseline"] = await timed_views(v, alerts)
        before = db_bytes(db) if store_url is None else 0
        rows_before = table_figures(db)["rows"] if store_url is None else {}
        refused = 0
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                await v.start("+447400999999", client_ip="203.0.113.9")
            except RateLimited:
                refused += 1
            clock.advance(0.01)  # 100 starts a second
        out["flood_s"] = round(time.perf_counter() - t0, 2)
        handler.flush()
        out["refused"] = refused
        out["log_bytes_added"] = log_file.stat().st_size - base_log
        if store_url is None:
            rows_after = table_figures(db)["rows"]
            out["db_bytes_added"] = db_bytes(db) - before
            out["rows_added"] = {
                t: rows_after[t] - rows_before.get(t, 0)
                for t in rows_after
                if rows_after[t] != rows_before.get(t, 0)
            }
        out["after_flood"] = await timed_views(v, alerts)
    events_log.removeHandler(handler)
    handler.close()
    return out


async def timed_read(v: Verifier) -> float:
    t0 = time.perf_counter()
    await load_activity(v.store, v.clock() - 86400, v.clock() + 1)
    return round(time.perf_counter() - t0, 4)


async def scaling(marks: list[int], store_url: str | None, data_dir: Path) -> dict[str, Any]:
    """Stats and alert timings after each number of events in ``marks``."""
    url = store_url or f"sqlite:///{data_dir / 'scale.db'}"
    settings = load_settings(
        env={}, data_dir=data_dir, store=url, secret_keys=[new_secret_hex()],
        transport="memory", limit_ip="off", limit_network="off", allowlist=["+44740"],
    )  # fmt: skip
    clock = ManualClock(1_750_000_000.0)
    outbox = MemoryTransport()
    out: dict[str, Any] = {"store": url.split(":")[0]}
    events = i = 0
    async with Verifier(settings, store_from_url(url), outbox, clock=clock) as v:
        alerts = AlertEvaluator(v, Dispatcher([]))
        for mark in marks:
            while events < mark:
                ver = await v.start(
                    f"+44740{i:07d}", client_ip=f"10.{i // 62500}.{i // 250 % 250}.{i % 250}"
                )
                await v.check(outbox.last_code(ver.to), verification_id=ver.id)
                for _ in range(2):
                    with contextlib.suppress(RateLimited):
                        await v.start("+447400999999", client_ip="203.0.113.9")
                events += 5
                i += 1
                clock.advance(0.1)
            figures = await timed_views(v, alerts)
            figures["reading_the_events_s"] = await timed_read(v)
            out[str(events)] = figures
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=61_000, help="refused starts (default 61000)")
    ap.add_argument("--pairs", type=int, default=2_000, help="baseline verifications")
    ap.add_argument("--store", default=None, help="a store URL (default: a SQLite file)")
    ap.add_argument("--scale", help="SMALL,LARGE: time stats and alerts after each (events)")
    args = ap.parse_args()
    if args.scale:
        marks = sorted(int(x) for x in args.scale.split(","))
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(scaling(marks, args.store, Path(tmp)))
        for mark in marks:
            print(f"after {mark} events: {figures[str(mark)]}")
        print(json.dumps(figures, sort_keys=True))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(run(args.n, args.pairs, args.store, Path(tmp)))
    per = out.get("per_verification")
    if per:
        print(f"per verification: {per['db_bytes_while_live']} B while live, "
              f"{per['db_bytes_kept_with_events']} B kept with its events, "
              f"{per['log_bytes']} B of log")  # fmt: skip
        for name, size in sorted(per["tables"]["bytes"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:28} {size:>10} B")
    print(f"baseline ({args.pairs} verifications): {out['baseline']}")
    print(f"flood: {out['refused']} of {args.n} starts refused in {out['flood_s']} s")
    if "db_bytes_added" in out:
        print(f"  database +{out['db_bytes_added']} B, rows added {out['rows_added']}")
    print(f"  log +{out['log_bytes_added']} B")
    print(f"after the flood: {out['after_flood']}")
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
