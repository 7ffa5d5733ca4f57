"""What PostgreSQL's backends wait on while ``otpguard serve`` runs saturating pairs.

    .venv/bin/python bench/pg_locks.py                       # 8 s, the default pool
    .venv/bin/python bench/pg_locks.py --pool 3 --duration 8

Starts ``otpguard serve`` (one worker) on a PostgreSQL database of the run's own,
exactly as ``bench/http.py`` does (file transport, every limit raised but still
evaluated), drives it with ``pair.lua`` and, every 10 ms, reads what the database's
backends are doing (``pg_stat_activity``: idle, running, or waiting and on what) and
which advisory locks they wait for (``pg_locks``), named by the rate-window or bucket
key whose ``hashtext`` they are. Prints pairs/s, the cores the server used, the mean
number of backends in each state, and the most waited-for keys.

A key that every start or approval locks (the country's window, the API key's or the
country's admission bucket) makes those requests take turns for as long as the holder
keeps the lock: to its commit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.util
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would shadow the standard library's ``http`` package: drop bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import psycopg  # noqa: E402 - after the sys.path change above


def _http() -> Any:
    """``bench/http.py``, by its path (its name would shadow the standard library's)."""
    spec = importlib.util.spec_from_file_location("otpguard_bench_http", ROOT / "bench/http.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STATES = (
    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
    "WHERE datname = %s AND pid <> pg_backend_pid()"
)
WAITS = (
    "SELECT l.objid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = %s"
)
KEYS = (
    "SELECT key, hashtext(key) FROM "
    "(SELECT DISTINCT key FROM rate_log UNION SELECT key FROM buckets) AS k"
)


class Sampler(threading.Thread):
    """Reads the backends' states and awaited locks every 10 ms until stopped."""

    def __init__(self, admin_url: str, db: str) -> None:
        super().__init__(daemon=True)
        self.admin_url, self.db = admin_url, db
        self.states: collections.Counter[str] = collections.Counter()
        self.waits: collections.Counter[int] = collections.Counter()
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self.done.is_set():
                for state, kind, event in conn.execute(STATES, (self.db,)):
                    self.states[state if kind is None else f"{state}: {kind} {event}"] += 1
                for (objid,) in conn.execute(WAITS, (self.db,)):
                    self.waits[int(objid)] += 1
                self.samples += 1
                time.sleep(0.01)


def run(args: argparse.Namespace) -> dict[str, Any]:
    h = _http()
    with (
        tempfile.TemporaryDirectory(prefix="otpguard-pglocks-") as tmp,
        h.own_servers(["postgres"], Path(tmp)),
    ):
        data = Path(tmp)
        asyncio.run(h.reset_store("postgres"))
        url = h.store_url("postgres", data)
        env = h.server_env(url + (f"?pool_max_size={args.pool}" if args.pool else ""), data)
        key = h.create_key(env)
        outbox = data / "outbox.jsonl"
        outbox.touch()
        db = url.rsplit("/", 1)[1]
        with h.server(env, 1) as port:
            base = f"http://127.0.0.1:{port}"
            h.wrk(base, 2, "bench/pair.lua", (key, str(outbox)))  # the pool fills
            served = sorted({p for pid in h.procs.listening(port) for p in h.procs.tree(pid)})
            sampler = Sampler(h.backends.PG_ADMIN_URL, db)
            sampler.start()
            cpu = h.procs.cpu_seconds(served)
            pairs = h.wrk(base, args.duration, "bench/pair.lua", (key, str(outbox)))
            seconds = pairs["duration_us"] / 1e6
            cores = (h.procs.cpu_seconds(served) - cpu) / seconds
            sampler.done.set()
            sampler.join()
        with psycopg.connect(url) as conn:
            names = {int(hashed) & 0xFFFFFFFF: k for k, hashed in conn.execute(KEYS)}
    n = max(1, sampler.samples)
    return {
        "pool_max_size": args.pool or 10,
        "pairs_per_s": round(pairs["valid"] / seconds, 1),
        "server_cores": round(cores, 2),
        "samples": sampler.samples,
        "backends": {s: round(c / n, 2) for s, c in sampler.states.most_common()},
        "awaited_keys": {
            names.get(objid & 0xFFFFFFFF, str(objid)): round(c / n, 2)
            for objid, c in sampler.waits.most_common(args.top)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds of pairs")
    parser.add_argument("--pool", type=int, default=0, help="pool_max_size (default 10)")
    parser.add_argument("--top", type=int, default=6, help="awaited keys to print")
    r = run(parser.parse_args())
    print(f"pool_max_size {r['pool_max_size']}: {r['pairs_per_s']} pairs/s, "
          f"server {r['server_cores']} cores, {r['samples']} samples")  # fmt: skip
    print("mean backends by state:")
    for state, mean in r["backends"].items():
        print(f"  {mean:6.2f}  {state}")
    print("mean backends waiting for the advisory lock of:")
    for name, mean in r["awaited_keys"].items():
        print(f"  {mean:6.2f}  {name}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
