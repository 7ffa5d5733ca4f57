"""Memory soak: each worker's RSS under steady real-time start + check pairs over HTTP.

    .venv/bin/python bench/soak.py                        # 30 min, 40 pairs/s, 2 workers
    .venv/bin/python bench/soak.py --minutes 3 --rate 20 --workers 1 --interval 10

Starts a real ``otpguard serve`` (development mode, the file transport, the chosen
store: by default a fresh SQLite file; every rate limit and fraud threshold raised as
in ``bench/http.py``, so that they never refuse but their work still runs). Pairs go
out on a fixed schedule, ``--rate`` a second: a start with a random UK mobile and a
random ``10.x.y.z`` client IP, then a right-code check of it, the code read from the
file outbox as a phone would read it (no endpoint returns a code). At most
``--in-flight`` pairs are open at once; a pair that would go over is skipped and
counted as ``late``, so the schedule never drifts and the achieved rate is printed.

Every ``--interval`` seconds it reads each worker's ``VmRSS`` from
``/proc/<pid>/status`` (the workers are the server process's children; with one
worker, the server process itself) and prints a row: elapsed time, RSS per worker,
pairs done, pairs/s over the interval, errors. The first ``--warmup`` seconds are
load too, but the baseline is the first sample after them. The verdict: each
worker's RSS at the baseline and at the end, and the least-squares slope of its RSS
over the second half of the samples, in MB per 10 minutes. The last line is one
JSON object with every figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` (which httpx imports).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import contextlib  # noqa: E402 - after the sys.path change above
import json  # noqa: E402 - after the sys.path change above
import os  # noqa: E402 - after the sys.path change above
import random  # noqa: E402 - after the sys.path change above
import subprocess  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from collections import Counter  # noqa: E402 - after the sys.path change above
from collections.abc import Iterator  # noqa: E402 - after the sys.path change above
from dataclasses import dataclass, field  # noqa: E402 - after the sys.path change above

import httpx  # noqa: E402 - after the sys.path change above

ROOT = _HERE.parent
BIN = ROOT / ".venv" / "bin"


# bench/ as a namespace package from the project root: ``bench.http`` cannot shadow the
# standard library's ``http`` the way a bare ``http`` would.
sys.path.insert(0, str(ROOT))
from bench import http as bench_http  # noqa: E402 - after the sys.path change above

HUGE = "1000000000/1m"
LIMITS = ("PHONE", "IP", "NETWORK", "PREFIX", "COUNTRY", "GLOBAL", "FAILED_CHECKS",
          "IP_FAILED_CHECKS")  # fmt: skip


def server_env(store_url: str, data_dir: Path) -> dict[str, str]:
    """Development settings with every limit out of the way (their work still runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPGUARD_", "TWILIO_"))}
    env.update(
        {
            "OTPGUARD_ENV": "development",
            "OTPGUARD_STORE": store_url,
            "OTPGUARD_DATA_DIR": str(data_dir),
            "OTPGUARD_TRANSPORT": "file",
            "OTPGUARD_OUTBOX_PATH": str(data_dir / "outbox.jsonl"),
            "OTPGUARD_SECRET_KEYS": os.urandom(32).hex(),
            "OTPGUARD_RESEND_COOLDOWN": "0",
            "OTPGUARD_FRAUD_CONVERSION_MIN_SENDS": "1000000000",
            "OTPGUARD_FRAUD_SEQUENTIAL_THRESHOLD": "1000000000",
            "OTPGUARD_FRAUD_BUDGET_GLOBAL": HUGE,
            "OTPGUARD_FRAUD_BUDGET_COUNTRY": HUGE,
        }
    )
    env.update({f"OTPGUARD_LIMIT_{name}": HUGE for name in LIMITS})
    return env


@contextlib.contextmanager
def server(env: dict[str, str], workers: int, port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(env["OTPGUARD_DATA_DIR"]) / "server.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [str(BIN / "otpguard"), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            env=env,
            cwd=env["OTPGUARD_DATA_DIR"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
    try:
        yield proc
    finally:
        bench_http.stop(proc)


def wait_ready(base: str, proc: subprocess.Popen[bytes], workers: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"otpguard serve exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            up = httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            if up and len(worker_pids(proc.pid, workers)) == workers:
                return
        time.sleep(0.2)  # waiting for a process to start
    raise RuntimeError("otpguard serve did not become ready")


# -- memory ------------------------------------------------------------------------------


def worker_pids(server_pid: int, workers: int) -> list[int]:
    """The uvicorn workers: the server's children running the app (not multiprocessing's
    resource tracker); with one worker, uvicorn serves in the server process itself."""
    if workers == 1:
        return [server_pid]
    try:
        text = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text()
    except OSError:
        return []
    pids = []
    for pid in map(int, text.split()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            pids.append(pid)
    return sorted(pids)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def slope_per_10min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per 10 minutes."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 600


# -- load --------------------------------------------------------------------------------


class Outbox:
    """Reads new lines of the file outbox (what a phone would receive) into id -> code."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""
        self.codes: dict[str, str] = {}

    def code_for(self, verification_id: str) -> str | None:
        if verification_id not in self.codes:
            self._read()
        return self.codes.pop(verification_id, None)

    def _read(self) -> None:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
            self.offset += len(data)
            *lines, self.pending = (self.pending + data).split(b"\n")
            for line in lines:
                if line.strip():
                    msg = json.loads(line)
                    self.codes[msg["verification_id"]] = msg["code"]


@dataclass
class Tally:
    pairs: int = 0  # right-code checks answered valid: true
    late: int = 0  # pairs skipped because --in-flight were already open
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


def _ip() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


async def one_pair(client: httpx.AsyncClient, outbox: Outbox, tally: Tally) -> None:
    to = f"+447400{random.randrange(1_000_000):06d}"
    try:
        r = await client.post("/v1/verifications", json={"to": to, "client_ip": _ip()})
        if r.status_code != 201:
            tally.errors[f"start {r.status_code}"] += 1
            return
        vid = r.json()["id"]
        code = outbox.code_for(vid)
        if code is None:
            tally.errors["no code in outbox"] += 1
            return
        body = {"id": vid, "code": code, "client_ip": _ip()}
        r = await client.post("/v1/verifications/check", json=body)
        if r.status_code == 200 and r.json().get("valid") is True:
            tally.pairs += 1
        else:
            tally.errors[f"check {r.status_code}"] += 1
    except httpx.HTTPError as exc:
        tally.errors[type(exc).__name__] += 1


async def drive(
    base: str, key: str, outbox: Outbox, rate: float, in_flight: int, tally: Tally,
    stop: asyncio.Event,
) -> None:  # fmt: skip
    """Launch a pair every 1/rate seconds on a fixed schedule until ``stop``."""
    # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout: reusing
    # one just as the server closes it is a ReadError that says nothing about the server.
    limits = httpx.Limits(
        max_connections=in_flight, max_keepalive_connections=in_flight, keepalive_expiry=2
    )
    headers = {"Authorization": f"Bearer {key}"}
    open_pairs: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=30
    ) as client:
        loop = asyncio.get_running_loop()
        t0, n = loop.time(), 0
        while not stop.is_set():
            n += 1
            delay = t0 + n / rate - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                    break
            if len(open_pairs) >= in_flight:
                tally.late += 1
                continue
            task = asyncio.create_task(one_pair(client, outbox, tally))
            open_pairs.add(task)
            task.add_done_callback(open_pairs.discard)
        if open_pairs:
            await asyncio.wait(open_pairs)


# -- the run -----------------------------------------------------------------------------


@dataclass
class Sample:
    elapsed: float
    rss: dict[int, float | None]
    pairs: int
    errors: int
    late: int


async def sample_loop(
    proc: subprocess.Popen[bytes], args: argparse.Namespace, tally: Tally, stop: asyncio.Event
) -> list[Sample]:
    pids = worker_pids(proc.pid, args.workers)
    print(f"server pid {proc.pid}, workers {pids}", flush=True)
    head = "  min  " + "".join(f"{'rss ' + str(p) + ' MB':>16}" for p in pids)
    print(head + "     pairs  pairs/s  errors   late", flush=True)
    samples: list[Sample] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    end = t0 + args.warmup + args.minutes * 60
    last_pairs, last_t = 0, t0
    while True:
        now = loop.time()
        if now >= end:
            break
        await asyncio.sleep(min(args.interval, end - now))
        now = loop.time()
        current = worker_pids(proc.pid, args.workers)
        if current != pids:
            print(f"worker pids changed: {pids} -> {current}", flush=True)
        rss = {p: rss_mb(p) for p in pids}
        s = Sample(now - t0, rss, tally.pairs, tally.error_total, tally.late)
        samples.append(s)
        rate = (s.pairs - last_pairs) / (now - last_t)
        last_pairs, last_t = s.pairs, now
        mark = " (warm-up)" if s.elapsed < args.warmup else ""
        cells = "".join(f"{v:16.1f}" if v is not None else f"{'gone':>16}" for v in rss.values())
        print(
            f"{s.elapsed / 60:5.1f}  {cells}  {s.pairs:8d}  {rate:7.1f}  {s.errors:6d}  "
            f"{s.late:5d}{mark}",
            flush=True,
        )
    stop.set()
    return samples


def verdict(samples: list[Sample], args: argparse.Namespace, tally: Tally) -> dict[str, object]:
    measured = [s for s in samples if s.elapsed >= args.warmup] or samples
    second_half = measured[len(measured) // 2 :]
    out: dict[str, object] = {
        "minutes": args.minutes,
        "rate_asked": args.rate,
        "workers": args.workers,
        "store": args.store,
        "pairs": tally.pairs,
        "errors": dict(tally.errors),
        "late": tally.late,
        "pairs_per_s": None,
        "per_worker": {},
    }
    if len(measured) >= 2:
        span = measured[-1].elapsed - measured[0].elapsed
        out["pairs_per_s"] = round((measured[-1].pairs - measured[0].pairs) / span, 1)
    per_worker: dict[str, dict[str, float | None]] = {}
    for pid in measured[0].rss:
        values = [(s.elapsed, s.rss[pid]) for s in measured if s.rss.get(pid) is not None]
        half = [(t, v) for t, v in values if t >= second_half[0].elapsed]
        slope = slope_per_10min([(t, v) for t, v in half if v is not None])
        per_worker[str(pid)] = {
            "baseline_mb": round(values[0][1], 1) if values and values[0][1] else None,
            "end_mb": round(values[-1][1], 1) if values and values[-1][1] else None,
            "max_mb": round(max(v for _, v in values if v is not None), 1) if values else None,
            "slope_second_half_mb_per_10min": round(slope, 2) if slope is not None else None,
        }
    out["per_worker"] = per_worker
    return out


def store_url(store: str, data_dir: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{data_dir / 'otpguard.db'}"
    return store  # a URL: redis://..., postgresql://... (the caller's own, emptied beforehand)


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    env = server_env(store_url(args.store, data_dir), data_dir)
    env.update(item.split("=", 1) for item in args.env)
    key = bench_http.create_key(env, "soak")
    port = bench_http.free_port()
    base = f"http://127.0.0.1:{port}"
    outbox = Outbox(data_dir / "outbox.jsonl")
    tally = Tally()
    with server(env, args.workers, port) as proc:
        await asyncio.to_thread(wait_ready, base, proc, args.workers)
        stop = asyncio.Event()
        load = asyncio.create_task(drive(base, key, outbox, args.rate, args.in_flight, tally,
                                         stop))  # fmt: skip
        samples = await sample_loop(proc, args, tally, stop)
        await load
    result = verdict(samples, args, tally)
    print_verdict(result)
    return result


def print_verdict(result: dict[str, object]) -> None:
    print(f"\npairs {result['pairs']} at {result['pairs_per_s']}/s after warm-up "
          f"(asked {result['rate_asked']}/s), late {result['late']}, "
          f"errors {result['errors'] or 0}")  # fmt: skip
    per_worker = result["per_worker"]
    assert isinstance(per_worker, dict)
    for pid, w in per_worker.items():
        print(f"worker {pid}: RSS {w['baseline_mb']} MB after warm-up -> {w['end_mb']} MB at "
              f"the end (max {w['max_mb']}); second-half slope "
              f"{w['slope_second_half_mb_per_10min']} MB / 10 min")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30, help="measured load after warm-up (30)")
    p.add_argument("--rate", type=float, default=40, help="pairs a second (40)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers (2)")
    p.add_argument("--store", default="sqlite", help="sqlite (a fresh file) or a store URL")
    p.add_argument("--interval", type=float, default=30, help="seconds between samples (30)")
    p.add_argument("--warmup", type=float, default=60, help="seconds of load before the baseline")
    p.add_argument("--env", action="append", default=[], metavar="OTPGUARD_X=VALUE",
                   help="one more server setting (repeatable)")  # fmt: skip
    p.add_argument("--in-flight", type=int, default=64, help="most pairs open at once (64)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="otpguard-soak-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
