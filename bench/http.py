"""HTTP benchmark: full start + check pairs against a real ``otpguard serve``.

    .venv/bin/python bench/http.py                      # every store, 1 and 2 workers
    .venv/bin/python bench/http.py --stores sqlite --workers 1 --duration 5
    .venv/bin/python bench/http.py --soak 100000        # Verifier-level soak (no HTTP)

For each store and worker count the script starts ``otpguard serve`` with the file
transport (the development outbox, read back the way a phone reads its messages;
no endpoint ever returns a code) and limits raised for load, then drives it with
``wrk`` and Lua scripts at 64 connections:

1. ``/noop`` with no script: the same server's ceiling, measured in the same run;
   then two seconds of pairs, not measured, so that the store's pool is full;
2. ``pair.lua``: a start, then (once its code shows up in the outbox) a check
   with the right code; pairs/s counts checks that came back ``valid: true``;
   then ``paced_pair.lua``, the same pairs offered at about half of that run's
   request rate (each connection waits before each request): the latency at half
   of the saturating load, as wrk saw it and as the server's own request histogram
   did (``served.py``: from its latency middleware in, to its buckets' resolution);
3. ``start.lua``: starts only, for the start endpoint's latency percentiles;
4. ``check.lua``: right-code checks of the verifications made in step 3 (codes
   from the outbox), for the check endpoint's latency percentiles.

The driver's own ceiling is ``start.lua`` against a canned-response stub server
(uvloop, no HTTP parsing), and the CPU that wrk itself used in every run is
printed beside it. Prints a table, then one JSON object as the last line.

``--soak N`` runs N verifications through the Verifier in process with a manual
clock (3 simulated seconds apart) and prints the SQLite file size, Redis memory
and this process's RSS as purging keeps up.

Stores are the run's own (``tests/backends.py``), so that benches and test runs on
one machine never share data: Redis is a private ``redis-server`` started for the
run (its memory figures are otpguard's alone), PostgreSQL a database named
``ogt_<run id>_bench`` on the local server, dropped at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is bench/http.py: drop its directory from sys.path, or it would shadow
# the standard library's ``http`` package (which httpx and uvicorn import).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import contextlib  # noqa: E402 - after the sys.path change above
import importlib.util  # noqa: E402 - after the sys.path change above
import json  # noqa: E402 - after the sys.path change above
import os  # noqa: E402 - after the sys.path change above
import resource  # noqa: E402 - after the sys.path change above
import shutil  # noqa: E402 - after the sys.path change above
import socket  # noqa: E402 - after the sys.path change above
import subprocess  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from collections.abc import Iterator  # noqa: E402 - after the sys.path change above
from typing import Any  # noqa: E402 - after the sys.path change above

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
CONNECTIONS = 64
WRK_THREADS = 2
HUGE = "1000000000/1m"
WARMUP_S = 2  # seconds of pairs before the measured runs of each server
#: kind -> URL of this run's own server or database (filled by ``own_servers``)
URLS: dict[str, str] = {}


def load(path: Path) -> Any:
    """A module loaded by its path: ``tests/backends.py`` (a ``tests`` package elsewhere
    on sys.path must not stand in for it), or a sibling of this script (this directory
    is off sys.path: see above)."""
    spec = importlib.util.spec_from_file_location(f"otpguard_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backends = load(ROOT / "tests" / "backends.py")
procs = load(_HERE / "procs.py")
latency = load(_HERE / "served.py")


def store_pids(kind: str) -> list[int]:
    """The store server's processes: every ``postgres`` process (background writers
    included, and any other database's: run on an otherwise idle machine), the run's
    own ``redis-server``; none for SQLite, which runs inside the server."""
    if kind == "postgres":
        return procs.named("postgres")
    if kind == "redis":
        port = int(URLS["redis"].rsplit(":", 1)[1].split("/", 1)[0])
        return procs.listening(port)
    return []


@contextlib.contextmanager
def own_servers(kinds: list[str], tmp: Path) -> Iterator[None]:
    """Start this run's redis-server; drop this run's databases at the end."""
    with contextlib.ExitStack() as stack:
        if "redis" in kinds:
            redis_server = stack.enter_context(backends.RedisServer(tmp / "redis"))
            URLS["redis"] = redis_server.url
        try:
            yield
        finally:
            left = backends.drop_databases()
            if left:
                print(f"could not drop this run's databases: {left}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(store_url: str, data_dir: Path) -> dict[str, str]:
    """Development settings with every limit, fraud threshold and admission bucket out
    of the way (their work still runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPGUARD_")}
    env.update(
        {
            "OTPGUARD_STORE": store_url,
            "OTPGUARD_DATA_DIR": str(data_dir),
            "OTPGUARD_TRANSPORT": "file",
            "OTPGUARD_OUTBOX_PATH": str(data_dir / "outbox.jsonl"),
            "OTPGUARD_SECRET_KEYS": "5f" * 32,
            "OTPGUARD_LOG_EVENTS": "false",
            "OTPGUARD_RESEND_COOLDOWN": "0",
            "OTPGUARD_FRAUD_CONVERSION_MIN_SENDS": "1000000000",
            "OTPGUARD_FRAUD_SEQUENTIAL_THRESHOLD": "1000000000",
            "OTPGUARD_FRAUD_BUDGET_GLOBAL": HUGE,
            "OTPGUARD_FRAUD_BUDGET_COUNTRY": HUGE,
            "OTPGUARD_ALERT_SINKS": "log",
        }
    )
    for name in ("PHONE", "IP", "NETWORK", "PREFIX", "COUNTRY", "GLOBAL", "FAILED_CHECKS",
                 "IP_FAILED_CHECKS"):  # fmt: skip
        env[f"OTPGUARD_LIMIT_{name}"] = HUGE
    # The admission buckets too (every driver number is in +447400, one block of a
    # million, and the block bucket admits 60 unconverted sends): still evaluated.
    for name in ("GLOBAL", "COUNTRY", "API_KEY", "BLOCK_4", "BLOCK_5", "BLOCK_6", "EMAIL_DOMAIN"):
        env[f"OTPGUARD_ADMISSION_{name}"] = HUGE
    return env


async def reset_store(kind: str) -> None:
    """Empty this run's store of ``kind`` (never a server or database it did not make)."""
    if kind == "redis":
        import redis.asyncio as aioredis

        assert backends.is_private(URLS["redis"])
        client = aioredis.from_url(URLS["redis"])
        try:
            await client.flushdb()
        finally:
            await client.aclose()
    elif kind == "postgres":
        URLS["postgres"] = await asyncio.to_thread(backends.create_database, "bench")


def store_url(kind: str, data_dir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{data_dir / 'otpguard.db'}"
    return URLS[kind]


def create_key(env: dict[str, str], name: str = "bench", scope: str = "verify") -> str:
    """An API key for the server ``env`` configures, made with the CLI as an operator would."""
    out = subprocess.run(
        [str(BIN / "otpguard"), "api-keys", "create", "--name", name, "--scope", scope],
        env=env,
        cwd=env["OTPGUARD_DATA_DIR"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


@contextlib.contextmanager
def server(env: dict[str, str], workers: int) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "otpguard"), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env,
        cwd=env["OTPGUARD_DATA_DIR"],
        stdout=subprocess.DEVNULL,
        stderr=open(Path(env["OTPGUARD_DATA_DIR"]) / "server.log", "ab"),  # noqa: SIM115
    )  # fmt: skip
    try:
        wait_ready(port, proc)
        yield port
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server the way an operator would (SIGTERM), killing it after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(
    url: str,
    duration: float,
    script: str | None = None,
    args: tuple[str, ...] = (),
    timeout: float = 2,
) -> dict[str, Any]:
    """Run wrk; its figures plus the CPU seconds wrk itself used. ``timeout``: wrk's own
    (a slower answer is counted as a timeout and left out of the percentiles)."""
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{round(duration)}s", "--latency"]
    cmd.append(f"--timeout={round(timeout)}s")
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if args:
        cmd += ["--", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    out = proc.stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result: dict[str, Any]
    lines = [ln for ln in out.splitlines() if ln.startswith("WRK_RESULT ")]
    if lines:
        result = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    else:  # no script: parse wrk's own summary
        result = {"requests": 0, "duration_us": 0, "non2xx": 0, "socket_errors": 0}
        for ln in out.splitlines():
            parts = ln.split()
            if "requests in" in ln:
                result["requests"] = int(parts[0])
            elif ln.startswith("Requests/sec:"):
                result["rps_reported"] = float(parts[1])
            elif ln.strip().startswith(("50%", "99%")):
                result[f"p{parts[0].rstrip('%')}_us"] = _us(parts[1])
        result["duration_us"] = int(result["requests"] / result["rps_reported"] * 1e6)
    seconds = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / seconds if seconds else 0.0
    result["wrk_cpu_share"] = cpu / seconds if seconds else 0.0  # cores used by wrk
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(seconds * 1000, 1)


def _share(share: float | None) -> float | None:
    return None if share is None else round(share, 4)


def _us(text: str) -> int:
    for unit, factor in (("us", 1), ("ms", 1000), ("s", 1_000_000)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    raise ValueError(text)


def checks_file(outbox: Path, offset: int, dest: Path) -> int:
    """(id, code) lines for every message the server wrote after ``offset``."""
    n = 0
    with outbox.open("rb") as fh, dest.open("w") as out:
        fh.seek(offset)
        for raw in fh:
            msg = json.loads(raw)
            out.write(f"{msg['verification_id']} {msg['code']}\n")
            n += 1
    return n


def run_case(kind: str, workers: int, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"otpguard-bench-{kind}-") as tmp:
        data_dir = Path(tmp)
        asyncio.run(reset_store(kind))
        env = server_env(store_url(kind, data_dir), data_dir)
        key = create_key(env)
        monitor = create_key(env, "bench-monitor", "monitor")  # reads /metrics
        outbox = data_dir / "outbox.jsonl"
        outbox.touch()
        with server(env, workers) as port:
            base = f"http://127.0.0.1:{port}"
            noop = wrk(f"{base}/noop", duration)
            # Warm-up, not measured: the store client's pool fills on its first burst
            # (redis-py builds each connection's handshake anew, a few ms each).
            wrk(base, WARMUP_S, "bench/pair.lua", (key, str(outbox)))
            served = sorted({p for pid in procs.listening(port) for p in procs.tree(pid)})
            stored = store_pids(kind)
            cpu = procs.cpu_seconds(served), procs.cpu_seconds(stored)
            pairs = wrk(base, duration, "bench/pair.lua", (key, str(outbox)))
            pair_s = pairs["duration_us"] / 1e6 or 1.0
            server_cores = (procs.cpu_seconds(served) - cpu[0]) / pair_s
            store_cores = (procs.cpu_seconds(stored) - cpu[1]) / pair_s
            # Half of the saturated run's request rate, offered evenly: each of the
            # connections waits the pace before each request (wrk's delay()).
            half = pairs["rps"] / 2
            pace_ms = max(1, round(CONNECTIONS * 1000 / half)) if half else 1000
            before = latency.reading(base, monitor)
            paced = wrk(base, duration, "bench/paced_pair.lua", (key, str(outbox), str(pace_ms)))
            inside = latency.merged(latency.diff(latency.reading(base, monitor), before))
            offset = outbox.stat().st_size
            starts = wrk(base, duration, "bench/start.lua", (key,))
            todo = data_dir / "checks.txt"
            checks_file(outbox, offset, todo)
            checks = wrk(base, duration, "bench/check.lua", (key, str(todo), str(WRK_THREADS)))
        pair_seconds = pairs["duration_us"] / 1e6
        return {
            "store": kind,
            "workers": workers,
            "noop_rps": round(noop["rps"]),
            "pairs_per_s": round(pairs["valid"] / pair_seconds, 1),
            "pair_run": {
                k: pairs[k]
                for k in (
                    "created",
                    "valid",
                    "invalid",
                    "refused",
                    "no_code",
                    "non2xx",
                    "socket_errors",
                )
            },
            # Cores each side used during the saturating pair run.
            "pair_cores": {
                "server": round(server_cores, 2),
                "store": round(store_cores, 2),
                "wrk": round(pairs["wrk_cpu_share"], 2),
            },
            "half_load_rps": round(paced["rps"], 1),
            "half_load_of_saturated": round(paced["rps"] / pairs["rps"], 3) if pairs["rps"] else 0,
            "half_load_p50_ms": paced["p50_us"] / 1000,
            "half_load_p99_ms": paced["p99_us"] / 1000,
            # The server's own histogram of the same run (served.py): the bucket bound
            # 99 % kept to, and the share within 25 ms.
            "half_load_server_p99_le_ms": _ms(latency.quantile_bound(inside)),
            "half_load_server_within_25ms": _share(latency.within(inside, 0.025)),
            "half_load_failed": paced["invalid"]
            + paced["refused"]
            + paced["no_code"]
            + paced["non2xx"]
            + paced["socket_errors"],
            "start_rps": round(starts["rps"], 1),
            "start_p50_ms": starts["p50_us"] / 1000,
            "start_p99_ms": starts["p99_us"] / 1000,
            "start_refused": starts["refused"] + starts["socket_errors"],
            "check_rps": round(checks["rps"], 1),
            "check_p50_ms": checks["p50_us"] / 1000,
            "check_p99_ms": checks["p99_us"] / 1000,
            "check_valid": checks["valid"],
            "check_invalid": checks["invalid"] + checks["socket_errors"],
            "wrk_cpu_cores": round(
                max(r["wrk_cpu_share"] for r in (noop, pairs, starts, checks)), 3
            ),
        }


# -- the driver's own ceiling --------------------------------------------------------------

_STUB_RESPONSE = (
    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 42\r\n\r\n"
    b'{"id":"VE00000000000000000000000000000000"}'
)


def _stub_server(port: int) -> None:
    import uvloop

    class Stub(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.pending = b""

        def data_received(self, data: bytes) -> None:
            data = self.pending + data
            n = data.count(b"\r\n\r\n")
            self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if n else data
            if n:
                self.transport.write(_STUB_RESPONSE * n)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Stub, "127.0.0.1", port, backlog=1024)
        async with srv:
            await srv.serve_forever()

    uvloop.run(main())


def driver_ceiling(duration: float) -> dict[str, Any]:
    import multiprocessing

    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_stub_server, args=(port,))
    proc.start()
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        r = wrk(f"http://127.0.0.1:{port}", duration, "bench/start.lua", ("stub",))
        return {"rps": round(r["rps"]), "wrk_cpu_cores": round(r["wrk_cpu_share"], 3)}
    finally:
        proc.terminate()
        proc.join()


# -- soak: a long run through the Verifier, in process ---------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(total: int, kinds: list[str]) -> list[dict[str, Any]]:
    from otpguard.clock import ManualClock
    from otpguard.config import load_settings
    from otpguard.service import Verifier
    from otpguard.stores import store_from_url
    from otpguard.transports.memory import MemoryTransport

    rows: list[dict[str, Any]] = []
    for kind in kinds:
        if kind == "postgres":
            continue  # not part of the soak target (SQLite file and Redis memory)
        with tempfile.TemporaryDirectory(prefix="otpguard-soak-") as tmp:
            data_dir = Path(tmp)
            await reset_store(kind)
            env = server_env(store_url(kind, data_dir), data_dir)
            env["OTPGUARD_EVENT_RETENTION_DAYS"] = "1"
            settings = load_settings(
                env={k: v for k, v in env.items() if k.startswith("OTPGUARD_")}
            )
            settings = settings.model_copy(update={"transport": "memory"})
            clock = ManualClock()
            outbox = MemoryTransport()
            store = store_from_url(settings.store_url)
            redis_client: Any = None
            if kind == "redis":
                import redis.asyncio as aioredis

                redis_client = aioredis.from_url(URLS["redis"])
            step = 3.0  # simulated seconds between verifications
            purge_every = max(1, int(settings.purge_interval / step))
            started = time.monotonic()
            async with Verifier(settings, store, outbox, clock=clock) as otp:
                for i in range(1, total + 1):
                    number = f"+447400{i % 1_000_000:06d}"
                    v = await otp.start(number, client_ip=f"10.{i % 250}.{i % 199}.7")
                    code = outbox.outbox[-1].code
                    outbox.outbox.clear()
                    await otp.check(code, verification_id=v.id)
                    clock.advance(step)
                    if i % purge_every == 0:
                        await otp.purge()
                    if i % max(1, total // 10) == 0 or i == total:
                        row: dict[str, Any] = {
                            "store": kind,
                            "verifications": i,
                            "simulated_hours": round(i * step / 3600, 1),
                            "rss_mb": round(rss_mb(), 1),
                            "elapsed_s": round(time.monotonic() - started, 1),
                        }
                        if kind == "sqlite":
                            row["sqlite_bytes"] = sqlite_bytes(data_dir)
                        if redis_client is not None:
                            info = await redis_client.info("memory")
                            row["redis_used_bytes"] = info["used_memory"]
                            row["redis_keys"] = await redis_client.dbsize()
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            if redis_client is not None:
                await redis_client.aclose()
    return rows


def sqlite_bytes(data_dir: Path) -> int:
    """The SQLite file and its WAL and shared-memory files, in bytes."""
    db = data_dir / "otpguard.db"
    return db.stat().st_size + sum(p.stat().st_size for p in data_dir.glob("otpguard.db-*"))


# -- main ------------------------------------------------------------------------------------


def store_available(kind: str) -> str | None:
    """None when the store can be benchmarked, else why not."""
    try:
        if kind == "redis":
            import otpguard.stores.redis
        if kind == "postgres":
            import otpguard.stores.postgres  # noqa: F401
    except ImportError as exc:
        return f"module missing ({exc})"
    return None


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": model, "python": sys.version.split()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,redis,postgres")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--soak", type=int, default=0, help="verifications in a soak run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    kinds = [k for k in args.stores.split(",") if k]
    skipped = {k: why for k in kinds if (why := store_available(k))}
    for k, why in skipped.items():
        print(f"skipping {k}: {why}", file=sys.stderr)
    kinds = [k for k in kinds if k not in skipped]

    with (
        tempfile.TemporaryDirectory(prefix="otpguard-bench-") as tmp,
        own_servers(kinds, Path(tmp)),
    ):
        if args.soak:
            rows = asyncio.run(soak(args.soak, kinds))
            print(json.dumps({"soak": rows, "skipped": skipped, "machine": machine()}))
            return 0
        ceiling = driver_ceiling(args.duration)
        results = []
        for kind in kinds:
            for workers in [int(w) for w in args.workers.split(",")]:
                r = run_case(kind, workers, args.duration)
                results.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)

    header = (
        f"{'store':9}{'wk':>3}{'noop/s':>9}{'pairs/s':>9}{'start/s':>9}{'p50':>7}{'p99':>7}"
        f"{'check/s':>9}{'p50':>7}{'p99':>7}{'ratio':>7}{'half req/s':>11}{'p50':>7}{'p99':>7}"
        f"{'srv p99<=':>10}{'srv<=25ms':>10}"
    )
    print(f"driver ceiling (start.lua vs stub): {ceiling['rps']} req/s, "
          f"wrk used {ceiling['wrk_cpu_cores']} cores")  # fmt: skip
    print(header)
    for r in results:
        r["pairs_vs_half_noop"] = round(r["pairs_per_s"] / (r["noop_rps"] / 2), 3)
        print(
            f"{r['store']:9}{r['workers']:>3}{r['noop_rps']:>9}{r['pairs_per_s']:>9}"
            f"{r['start_rps']:>9}{r['start_p50_ms']:>7.1f}{r['start_p99_ms']:>7.1f}"
            f"{r['check_rps']:>9}{r['check_p50_ms']:>7.1f}{r['check_p99_ms']:>7.1f}"
            f"{r['pairs_vs_half_noop']:>7}{r['half_load_rps']:>11}{r['half_load_p50_ms']:>7.1f}"
            f"{r['half_load_p99_ms']:>7.1f}{r['half_load_server_p99_le_ms']!s:>10}"
            f"{r['half_load_server_within_25ms']!s:>10}"
        )
    scaling = {}
    for kind in kinds:
        one = [r for r in results if r["store"] == kind and r["workers"] == 1]
        two = [r for r in results if r["store"] == kind and r["workers"] == 2]
        if one and two and one[0]["pairs_per_s"]:
            scaling[kind] = round(two[0]["pairs_per_s"] / one[0]["pairs_per_s"], 2)
    print(f"2-worker / 1-worker pairs/s: {scaling}")
    print("cores used in the pair run (server, store server, wrk; the machine has "
          f"{os.cpu_count()}):")  # fmt: skip
    for r in results:
        c = r["pair_cores"]
        print(f"  {r['store']:9}{r['workers']:>3}  {c['server']:.2f} + {c['store']:.2f}"
              f" + {c['wrk']:.2f} = {c['server'] + c['store'] + c['wrk']:.2f}")  # fmt: skip
    print(
        json.dumps(
            {
                "connections": CONNECTIONS,
                "duration_s": args.duration,
                "driver_ceiling": ceiling,
                "results": results,
                "scaling_2_over_1": scaling,
                "skipped": skipped,
                "machine": machine(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
