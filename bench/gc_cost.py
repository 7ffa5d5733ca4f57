"""The garbage collector's share of a serving process's CPU: Python's default
collector against ``otpguard.web.app.tune_gc`` (what ``otpguard serve`` runs).

    .venv/bin/python bench/gc_cost.py                       # sqlite and redis, 2 rounds
    .venv/bin/python bench/gc_cost.py --stores sqlite --pairs 500 --rounds 1

Each run is a fresh process holding the app as ``otpguard serve`` builds it, with
bench/http.py's settings (every limit out of the way, the file transport): with
``--mode tuned`` as the server's own factory makes it (``serving=True``), with
``default`` as a library host does (``create_app(settings)``, the collector left
alone). It drives start + right-code check pairs through httpx's ASGI transport,
16 at a time, codes read back from the outbox as a phone would, after 100 pairs of
warm-up. ``gc.callbacks`` time every collection. The driver shares the process, so
its own allocations count too: the figures are the collector's cost in a process
that serves, not a server's exact profile.

Modes alternate within a round, so both see the same machine. Prints a table, then
one JSON object as the last line.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Off sys.path: this directory's http.py would shadow the standard library's ``http``.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import gc  # noqa: E402 - after the sys.path change above
import importlib.util  # noqa: E402 - after the sys.path change above
import json  # noqa: E402 - after the sys.path change above
import os  # noqa: E402 - after the sys.path change above
import random  # noqa: E402 - after the sys.path change above
import subprocess  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from typing import Any  # noqa: E402 - after the sys.path change above

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
WARMUP = 100


def _http_bench() -> Any:
    """bench/http.py (its server settings, key, stores), loaded by its path."""
    spec = importlib.util.spec_from_file_location("otpguard_bench_http", ROOT / "bench/http.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Collections:
    """Every collection's generation and seconds, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._t0
        self.counts[info["generation"]] += 1
        self.seconds[info["generation"]] += took
        self.longest = max(self.longest, took)


class Outbox:
    """The file transport's outbox, read from where this run started, new lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.codes: dict[str, str] = {}

    def code(self, verification_id: str) -> str:
        if verification_id not in self.codes:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            for line in data[:end].splitlines():
                msg = json.loads(line)
                self.codes[msg["verification_id"]] = msg["code"]
        return self.codes.pop(verification_id)


async def pairs(client: Any, key: str, outbox: Outbox, first: int, n: int) -> int:
    """``n`` start + right-code check pairs, ``CONCURRENCY`` at a time; the approvals."""
    headers = {"Authorization": f"Bearer {key}"}
    numbers = iter(range(first, first + n))
    valid = 0

    async def one_by_one() -> None:
        nonlocal valid
        for i in numbers:
            ip = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
            body = {"to": f"+447400{i:06d}", "client_ip": ip}
            r = await client.post("/v1/verifications", json=body, headers=headers)
            if r.status_code != 201:
                raise RuntimeError(f"start: {r.status_code} {r.text[:200]}")
            vid = r.json()["id"]
            check = {"id": vid, "code": outbox.code(vid), "client_ip": ip}
            r = await client.post("/v1/verifications/check", json=check, headers=headers)
            valid += r.status_code == 200 and r.json().get("valid") is True

    await asyncio.gather(*(one_by_one() for _ in range(CONCURRENCY)))
    return valid


async def child(mode: str, store_url: str, data_dir: Path, n: int) -> dict[str, Any]:
    import httpx

    from otpguard.config import load_settings
    from otpguard.web.app import create_app

    h = _http_bench()
    env = h.server_env(store_url, data_dir)
    os.environ.update(env)
    key = h.create_key(env)
    (data_dir / "outbox.jsonl").touch()
    app = create_app(load_settings(), serving=mode == "tuned")
    stats = Collections()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            outbox = Outbox(data_dir / "outbox.jsonl")
            await pairs(client, key, outbox, 0, WARMUP)
            gc.callbacks.append(stats)
            cpu, wall = time.process_time(), time.perf_counter()
            valid = await pairs(client, key, outbox, WARMUP, n)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            gc.callbacks.remove(stats)
    gc_s = sum(stats.seconds)
    return {
        "mode": mode,
        "pairs": n,
        "valid": valid,
        "threshold": list(gc.get_threshold()),
        "frozen": gc.get_freeze_count(),
        "cpu_ms_per_pair": round(cpu / n * 1000, 3),
        "wall_s": round(wall, 2),
        "collections": stats.counts,
        "gc_seconds": [round(s, 3) for s in stats.seconds],
        "gc_ms_per_pair": round(gc_s / n * 1000, 3),
        "gc_share_of_cpu": round(gc_s / cpu, 3) if cpu else 0.0,
        "longest_collection_ms": round(stats.longest * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("default", "tuned"), help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(child(args.child, args.store_url, Path(args.data_dir), args.pairs))
        print(json.dumps(result))
        return 0
    h = _http_bench()
    kinds = [k for k in args.stores.split(",") if k]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="otpguard-gc-") as tmp, h.own_servers(kinds, Path(tmp)):
        for round_ in range(args.rounds):
            for kind in kinds:
                for mode in ("default", "tuned"):
                    data_dir = Path(tmp) / f"{kind}-{mode}-{round_}"
                    data_dir.mkdir()
                    asyncio.run(h.reset_store(kind))
                    url = h.store_url(kind, data_dir)
                    cmd = [sys.executable, __file__, "--child", mode, "--pairs", str(args.pairs),
                           "--store-url", url, "--data-dir", str(data_dir)]  # fmt: skip
                    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if out.returncode != 0:
                        raise RuntimeError(f"{kind} {mode}: {out.stderr.strip()[-800:]}")
                    results.append({"store": kind, **json.loads(out.stdout.splitlines()[-1])})
    print(f"{'store':8} {'mode':8} {'cpu ms/pair':>11} {'gc ms/pair':>10} {'gc share':>8} "
          f"{'longest ms':>10}  collections (gen 0/1/2)")  # fmt: skip
    for r in results:
        gens = "/".join(map(str, r["collections"]))
        print(f"{r['store']:8} {r['mode']:8} {r['cpu_ms_per_pair']:11.3f} "
              f"{r['gc_ms_per_pair']:10.3f} {r['gc_share_of_cpu']:8.3f} "
              f"{r['longest_collection_ms']:10.2f}  {gens}")  # fmt: skip
    print(json.dumps({"concurrency": CONCURRENCY, "warmup_pairs": WARMUP, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
