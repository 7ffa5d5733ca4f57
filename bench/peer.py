"""Side by side: otpguard and django-phone-verify, at the same number of stored rows.

    .venv/bin/python bench/peer.py                        # sqlite, postgres; 1,000, 10,000 rows
    .venv/bin/python bench/peer.py --rows 10000,1000000 --stores sqlite
    .venv/bin/python bench/peer.py --rows 100 --duration 2 --stores sqlite   # the smoke run

Issue 16 asks for at least 20 times the peer's pairs/s at the same number of stored
rows, and for throughput that does not fall as rows pile up. For each row count and
store, in one run, this script:

1. seeds otpguard's store with that many verifications and drives ``otpguard serve``
   exactly as ``bench/http.py`` does (its server, settings, API key, ``wrk`` and
   ``pair.lua``): the ``/noop`` ceiling, then start + right-code check pairs;
2. seeds the peer's ``sms_verification`` table with as many rows and drives the
   peer under gunicorn with ``peer_pair.lua`` at the same connections and duration:
   its own no-op ceiling (a Django view through the default middleware), then
   register + right-code verify pairs.

**The peer** is installed from PyPI (pinned below) into a venv of its own under the
user's cache directory, never into the project's. A Django project is made in a
temporary directory by ``django-admin startproject`` and set up as the peer's README
says (``rest_framework`` and ``phone_verify`` installed, ``PHONE_VERIFICATION``, the
app's URLs under ``api/``: ``/api/phone/register`` and ``/api/phone/verify``), with
``DEBUG = False``, SQLite (the project's default file) or PostgreSQL (a database of
this run's own, persistent connections), served by gunicorn's sync workers
(``--workers``, default 1). Its SMS backend is one of the peer's kind
(``BaseBackend.send_sms``) that appends each message to a file as a phone receives it
(the number and the text); the driver reads codes from that file, never from an
answer. None of the peer's code is in this repository: the settings, URLs, backend and
seeding script are written at run time.

**Seeding.** The peer: ``bulk_create`` of verified rows with the peer's own code and
session-token generators, one number each. otpguard: the first ``--engine-seed``
(2,000) verifications through the engine in process (start, then a right-code check:
every counter and event a real pair leaves), then, only for this benchmark, copies of
those rows (verifications and their events) inserted in bulk with fresh ids and a
number each; counters are not copied. On PostgreSQL both sides get ``ANALYZE`` after
seeding, as autovacuum would give them.

Prints a table per row count (pairs/s, p50/p99 over every request of the pair run,
the ratio otpguard / peer) and how much of each side's pairs/s is kept at the largest
row count, then one JSON object as the last line. Exit status 2 with a line
``unavailable: ...`` on stderr: something the run needs (wrk, PostgreSQL) is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would shadow the standard library's ``http`` package: drop bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import contextlib  # noqa: E402 - after the sys.path change above
import fcntl  # noqa: E402 - after the sys.path change above
import hashlib  # noqa: E402 - after the sys.path change above
import json  # noqa: E402 - after the sys.path change above
import os  # noqa: E402 - after the sys.path change above
import secrets  # noqa: E402 - after the sys.path change above
import shutil  # noqa: E402 - after the sys.path change above
import sqlite3  # noqa: E402 - after the sys.path change above
import subprocess  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
from collections.abc import Iterator, Sequence  # noqa: E402 - after the sys.path change above
from typing import Any  # noqa: E402 - after the sys.path change above
from urllib.parse import urlsplit  # noqa: E402 - after the sys.path change above

# bench/ as a namespace package from the project root: ``bench.http`` cannot shadow the
# standard library's ``http`` the way a bare ``http`` would.
sys.path.insert(0, str(ROOT))
from bench import http as bench_http  # noqa: E402 - after the sys.path change above

backends = bench_http.backends  # tests/backends.py: this run's own databases

PEER = "django-phone-verify"
PEER_PINS = (
    "Django==5.2.19",
    "djangorestframework==3.18.3",
    "django-phone-verify==3.3.0",
    "gunicorn==27.0.1",
    "psycopg[binary]==3.3.9",
)
ENGINE_SEED = 2000
WRK_TIMEOUT = 30  # seconds: a slow answer still counts in the percentiles


# -- the peer's venv and project ---------------------------------------------------------------


def peer_venv() -> tuple[Path, dict[str, str]]:
    """The peer's own venv (made once per set of pins) and what pip installed in it."""
    digest = hashlib.sha256("\n".join(PEER_PINS).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "otpguard-bench" / f"peer-{digest}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    installed = venv / "installed.txt"
    with (venv.parent / f"peer-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once: one installs, one waits
        if not installed.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip"]
            done = subprocess.run(
                [*pip, "install", "-q", *PEER_PINS], capture_output=True, text=True, check=False
            )
            if done.returncode:
                raise RuntimeError(f"pip install of the peer failed: {done.stderr[-2000:]}")
            freeze = subprocess.run(
                [*pip, "freeze"], check=True, capture_output=True, text=True
            ).stdout
            installed.write_text(freeze)
    versions = {}
    for line in installed.read_text().splitlines():
        name, _, version = line.partition("==")
        if version:
            versions[name.lower()] = version
    return venv, versions


SETTINGS_TAIL = """
# -- written by otpguard's bench/peer.py: django-phone-verify as its README sets it up --
import os

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS += ["rest_framework", "phone_verify"]
PHONE_VERIFICATION = {
    "BACKEND": "outbox_backend.OutboxBackend",
    "OPTIONS": {"OUTBOX": os.environ["PEER_OUTBOX"]},
    "TOKEN_LENGTH": 6,
    "MESSAGE": "Welcome to {app}! Please use security code {security_code} to proceed.",
    "APP_NAME": "Phone Verify",
    "SECURITY_CODE_EXPIRATION_SECONDS": 300,
    "VERIFY_SECURITY_CODE_ONLY_ONCE": True,
}
if os.environ.get("PEER_PG_NAME"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["PEER_PG_NAME"],
            "USER": os.environ["PEER_PG_USER"],
            "HOST": os.environ["PEER_PG_HOST"],
            "PORT": os.environ["PEER_PG_PORT"],
            "CONN_MAX_AGE": None,  # one connection per worker, kept
        }
    }
"""

URLS_PY = '''"""The peer's API under api/ (api/phone/register, api/phone/verify); a no-op."""
from django.http import HttpResponse
from django.urls import include, path


def noop(request):
    return HttpResponse(b"")


urlpatterns = [
    path("api/", include("phone_verify.urls")),
    path("noop", noop),
    path("readyz", noop),
]
'''

BACKEND_PY = '''"""An SMS backend of django-phone-verify's kind: each message appended to a file."""
import json

from phone_verify.backends.base import BaseBackend


class OutboxBackend(BaseBackend):
    def __init__(self, **options):
        super().__init__(**options)
        self.path = options["OUTBOX"]
        self.exception_class = OSError

    def send_sms(self, number, message):
        with open(self.path, "a") as fh:  # what the phone receives: number and text
            fh.write(json.dumps({"to": str(number), "body": message}) + "\\n")

    def send_bulk_sms(self, numbers, message):
        for number in numbers:
            self.send_sms(number, message)
'''

SEED_PY = '''"""Seeds N verified SMSVerification rows, one number each; prints the row count."""
import sys

import django

django.setup()

from django.db import connection  # noqa: E402 - after the sys.path change above
from phone_verify.backends.base import BaseBackend  # noqa: E402 - after the sys.path change above
from phone_verify.models import SMSVerification  # noqa: E402 - after the sys.path change above

n = int(sys.argv[1])
batch = []
for i in range(n):
    number = f"+4475{i:08d}"
    batch.append(SMSVerification(
        phone_number=number,
        security_code=BaseBackend.generate_security_code(),
        session_token=BaseBackend.generate_session_token(number),
        is_verified=True,
    ))
    if len(batch) == 5000 or i == n - 1:
        SMSVerification.objects.bulk_create(batch)
        batch = []
if connection.vendor == "postgresql":
    with connection.cursor() as cur:
        cur.execute("ANALYZE sms_verification")
print(SMSVerification.objects.count())
'''


def peer_project(venv: Path, directory: Path, db_url: str | None) -> dict[str, str]:
    """Make, configure and migrate the peer's Django project; its environment."""
    directory.mkdir()
    subprocess.run(
        [str(venv / "bin" / "django-admin"), "startproject", "peerbench", str(directory)],
        check=True,
    )
    with (directory / "peerbench" / "settings.py").open("a") as fh:
        fh.write(SETTINGS_TAIL)
    (directory / "peerbench" / "urls.py").write_text(URLS_PY)
    (directory / "outbox_backend.py").write_text(BACKEND_PY)
    (directory / "seed.py").write_text(SEED_PY)
    (directory / "outbox.jsonl").touch()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("OTPGUARD_")
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="peerbench.settings",
        PEER_OUTBOX=str(directory / "outbox.jsonl"),
    )
    if db_url:
        parts = urlsplit(db_url)
        env.update(
            PEER_PG_NAME=parts.path.lstrip("/"),
            PEER_PG_USER=parts.username or "postgres",
            PEER_PG_HOST=parts.hostname or "127.0.0.1",
            PEER_PG_PORT=str(parts.port or 5432),
        )
    peer_python(venv, directory, env, "manage.py", "migrate", "-v", "0")
    return env


def peer_python(venv: Path, directory: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), *args],
        cwd=directory,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@contextlib.contextmanager
def peer_server(venv: Path, directory: Path, env: dict[str, str], workers: int) -> Iterator[int]:
    """gunicorn with ``workers`` sync workers, as the peer is deployed; its port."""
    port = bench_http.free_port()
    with (directory / "gunicorn.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "peerbench.wsgi:application",
             "--workers", str(workers), "--worker-class", "sync", "--backlog", "2048",
             "--bind", f"127.0.0.1:{port}", "--chdir", str(directory)],
            env=env, cwd=directory, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        bench_http.wait_ready(port, proc)
        yield port
    finally:
        bench_http.stop(proc)


# -- seeding otpguard ----------------------------------------------------------------------------


def seed_number(i: int) -> str:
    """The i-th seeded number: UK mobiles outside the +447400 range the drivers use."""
    return f"+4475{i:08d}"


async def seed_engine(env: dict[str, str], n: int) -> None:
    """``n`` start + right-code check pairs through the engine, as a server makes them."""
    from otpguard.config import load_settings
    from otpguard.service import Verifier
    from otpguard.stores import store_from_url
    from otpguard.transports.memory import MemoryTransport

    settings = load_settings(env={k: v for k, v in env.items() if k.startswith("OTPGUARD_")})
    settings = settings.model_copy(update={"transport": "memory"})
    outbox = MemoryTransport()
    async with Verifier(settings, store_from_url(settings.store_url), outbox) as engine:
        for i in range(n):
            v = await engine.start(seed_number(i), client_ip=f"10.{i % 250}.{i // 250 % 250}.9")
            code = outbox.outbox[-1].code
            outbox.outbox.clear()
            await engine.check(code, verification_id=v.id)


def fresh_id(old: str) -> str:
    """An id shaped like ``old`` (its prefix kept), its last 64 bits new."""
    return old[:-16] + secrets.token_hex(8)


Rows = list[list[Any]]


def copies(
    vcols: Sequence[str], originals: Rows, ecols: Sequence[str], events: Rows, n: int
) -> Iterator[tuple[Rows, Rows]]:
    """Batches of copied verifications (and their events) until there are ``n``."""
    vid, num = vcols.index("id"), vcols.index("to_number")
    eid, evid = ecols.index("id"), ecols.index("verification_id")
    by_verification: dict[Any, Rows] = {}
    for e in events:
        by_verification.setdefault(e[evid], []).append(e)
    vbatch: Rows = []
    ebatch: Rows = []
    for i in range(len(originals), n):
        src = originals[i % len(originals)]
        row = list(src)
        row[vid], row[num] = fresh_id(src[vid]), seed_number(i)
        vbatch.append(row)
        for e in by_verification.get(src[vid], []):
            copy = list(e)
            copy[eid], copy[evid] = fresh_id(e[eid]), row[vid]
            ebatch.append(copy)
        if len(vbatch) == 10_000 or i == n - 1:
            yield vbatch, ebatch
            vbatch, ebatch = [], []


def insert_sql(table: str, cols: Sequence[str]) -> str:
    marks = ",".join("?" * len(cols))
    return f"INSERT INTO {table} ({','.join(cols)}) VALUES ({marks})"  # noqa: S608


def copy_sqlite(path: Path, n: int) -> int:
    """Copies of the engine's verifications and their events until there are ``n``."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        cur = conn.execute("SELECT * FROM verifications")
        vcols = [d[0] for d in cur.description]
        originals = [list(r) for r in cur.fetchall()]
        cur = conn.execute("SELECT * FROM events WHERE verification_id IS NOT NULL")
        ecols = [d[0] for d in cur.description]
        events = [list(r) for r in cur.fetchall()]
        vsql, esql = insert_sql("verifications", vcols), insert_sql("events", ecols)
        for vbatch, ebatch in copies(vcols, originals, ecols, events, n):
            with conn:
                conn.executemany(vsql, vbatch)
                conn.executemany(esql, ebatch)
        stored: int = conn.execute("SELECT count(*) FROM verifications").fetchone()[0]
        return stored


def copy_postgres(url: str, n: int) -> int:
    """As ``copy_sqlite``, with COPY in text form (every value as the server printed it)."""
    import psycopg

    def read(conn: psycopg.Connection[Any], query: str) -> tuple[list[str], Rows]:
        with conn.cursor() as cur:
            cur.execute(f"{query} LIMIT 0")
            cols = [d.name for d in cur.description or ()]
            with cur.copy(f"COPY ({query}) TO STDOUT") as cp:
                return cols, [list(r) for r in cp.rows()]

    with psycopg.connect(url) as conn:
        vcols, originals = read(conn, "SELECT * FROM verifications")
        ecols, events = read(conn, "SELECT * FROM events WHERE verification_id IS NOT NULL")
        for vbatch, ebatch in copies(vcols, originals, ecols, events, n):
            with conn.cursor() as cur:
                for table, cols, rows in (("verifications", vcols, vbatch),
                                          ("events", ecols, ebatch)):  # fmt: skip
                    with cur.copy(f"COPY {table} ({','.join(cols)}) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
            conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
        row = conn.execute("SELECT count(*) FROM verifications").fetchone()
        return int(row[0]) if row else 0


# -- the runs --------------------------------------------------------------------------------


def drive(
    server: str, kind: str, rows: int, stored: int, port: int, pair: tuple[str, tuple[str, ...]],
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """The no-op ceiling, then pairs, at the same connections and duration for both."""
    base = f"http://127.0.0.1:{port}"
    noop = bench_http.wrk(f"{base}/noop", args.duration, timeout=WRK_TIMEOUT)
    pairs = bench_http.wrk(base, args.duration, pair[0], pair[1], timeout=WRK_TIMEOUT)
    seconds = pairs["duration_us"] / 1e6
    result = {
        "server": server,
        "store": kind,
        "rows": rows,
        "stored": stored,
        "noop_rps": round(noop["rps"]),
        "pairs_per_s": round(pairs["valid"] / seconds, 1) if seconds else 0.0,
        # starts and right checks averaged: the run's first round of starts (every
        # connection begins with one) and its last, unchecked, do not count against it
        "balanced_pairs_per_s": (
            round((pairs["created"] + pairs["valid"]) / 2 / seconds, 1) if seconds else 0.0
        ),
        "p50_ms": pairs["p50_us"] / 1000,
        "p99_ms": pairs["p99_us"] / 1000,
        "pair_run": {
            k: pairs[k] for k in ("created", "valid", "invalid", "refused", "no_code", "non2xx")
        }
        | {"socket_errors": pairs["socket_errors"]},
        "wrk_cpu_cores": round(max(noop["wrk_cpu_share"], pairs["wrk_cpu_share"]), 3),
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def run_otpguard(kind: str, rows: int, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    data_dir = tmp / f"otpguard-{kind}-{rows}"
    data_dir.mkdir()
    url = bench_http.store_url("sqlite", data_dir) if kind == "sqlite" else None
    url = url or backends.create_database("bench")
    env = bench_http.server_env(url, data_dir)
    asyncio.run(seed_engine(env, min(rows, args.engine_seed)))
    if kind == "sqlite":
        stored = copy_sqlite(data_dir / "otpguard.db", rows)
    else:
        stored = copy_postgres(url, rows)
    key = bench_http.create_key(env)
    outbox = data_dir / "outbox.jsonl"
    outbox.touch()
    with bench_http.server(env, args.workers) as port:
        return drive("otpguard", kind, rows, stored, port,
                     ("bench/pair.lua", (key, str(outbox))), args)  # fmt: skip


def run_peer(
    venv: Path, kind: str, rows: int, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    directory = tmp / f"peer-{kind}-{rows}"
    db_url = backends.create_database("peer") if kind == "postgres" else None
    env = peer_project(venv, directory, db_url)
    stored = int(peer_python(venv, directory, env, "seed.py", str(rows)).split()[-1])
    with peer_server(venv, directory, env, args.workers) as port:
        pair = ("bench/peer_pair.lua", (env["PEER_OUTBOX"],))
        return drive(PEER, kind, rows, stored, port, pair, args)


# -- output ----------------------------------------------------------------------------------


def summarise(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Ratios otpguard / peer per store and row count; each side's pairs/s kept at its
    largest row count, as a share of its smallest."""
    by = {(r["server"], r["store"], r["rows"]): r for r in results}
    ratios = []
    for (server, kind, rows), r in by.items():
        peer = by.get((PEER, kind, rows))
        if server == "otpguard" and peer is not None:
            ratio = r["pairs_per_s"] / peer["pairs_per_s"] if peer["pairs_per_s"] else None
            ratios.append({"store": kind, "rows": rows,
                           "otpguard_over_peer": round(ratio, 2) if ratio else None})  # fmt: skip
    kept: dict[str, Any] = {}
    for server, kind in sorted({(s, k) for s, k, _ in by}):
        counts = sorted(n for s, k, n in by if (s, k) == (server, kind))
        first, last = by[(server, kind, counts[0])], by[(server, kind, counts[-1])]
        if len(counts) > 1 and first["pairs_per_s"]:
            kept[f"{server}/{kind}"] = {
                "from_rows": counts[0],
                "to_rows": counts[-1],
                "pairs_kept": round(last["pairs_per_s"] / first["pairs_per_s"], 3),
            }
    return ratios, kept


def print_tables(
    results: list[dict[str, Any]], ratios: list[dict[str, Any]], kept: dict[str, Any]
) -> None:
    ratio_of = {(r["store"], r["rows"]): r["otpguard_over_peer"] for r in ratios}
    for rows in sorted({r["rows"] for r in results}):
        print(f"\n{rows:,} stored rows")
        print(f"{'store':9}{'server':21}{'stored':>9}{'noop/s':>8}{'pairs/s':>9}"
              f"{'p50 ms':>8}{'p99 ms':>9}{'otpguard/peer':>15}")  # fmt: skip
        for r in (r for r in results if r["rows"] == rows):
            ratio = ratio_of.get((r["store"], rows)) if r["server"] == "otpguard" else ""
            print(
                f"{r['store']:9}{r['server']:21}{r['stored']:>9}{r['noop_rps']:>8}"
                f"{r['pairs_per_s']:>9}{r['p50_ms']:>8.1f}{r['p99_ms']:>9.1f}{ratio or '':>15}"
            )
    for name, k in kept.items():
        print(f"{name}: {k['pairs_kept']:.0%} of its pairs/s kept from "
              f"{k['from_rows']:,} to {k['to_rows']:,} rows")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--rows", default="1000,10000", help="stored rows, comma-separated")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=bench_http.CONNECTIONS,
                        help="wrk connections, each side (bench/http.py's by default)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="server processes, each side")
    parser.add_argument("--engine-seed", type=int, default=ENGINE_SEED,
                        help="otpguard rows made by the engine; the rest: copies")  # fmt: skip
    args = parser.parse_args()
    kinds = [k for k in args.stores.split(",") if k]
    if unknown := set(kinds) - {"sqlite", "postgres"}:
        parser.error(f"the peer runs on sqlite and postgres, not {sorted(unknown)}")
    counts = [int(n) for n in args.rows.split(",") if n]
    bench_http.CONNECTIONS = args.connections  # what its wrk() runs with
    if shutil.which("wrk") is None:
        print("unavailable: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    venv, versions = peer_venv()
    pinned = [pin.split("==")[0].split("[")[0].lower() for pin in PEER_PINS]
    print(f"{PEER} in {venv}: " + ", ".join(f"{n}=={versions.get(n, '?')}" for n in pinned))
    results = []
    with tempfile.TemporaryDirectory(prefix="otpguard-peer-") as tmp:
        try:
            for rows in counts:
                for kind in kinds:
                    results.append(run_otpguard(kind, rows, Path(tmp), args))
                    results.append(run_peer(venv, kind, rows, Path(tmp), args))
                for done in Path(tmp).iterdir():  # a million rows take room: go now
                    shutil.rmtree(done)
        except backends.BackendUnavailable as exc:
            print(f"unavailable: {exc}", file=sys.stderr)
            return 2
        finally:
            if left := backends.drop_databases():
                print(f"could not drop this run's databases: {left}", file=sys.stderr)
    ratios, kept = summarise(results)
    print_tables(results, ratios, kept)
    print(json.dumps({
        "connections": bench_http.CONNECTIONS,
        "wrk_threads": bench_http.WRK_THREADS,
        "duration_s": args.duration,
        "workers": args.workers,
        "wrk_timeout_s": WRK_TIMEOUT,
        "engine_seed": args.engine_seed,
        "peer_versions": versions,
        "results": results,
        "ratios": ratios,
        "kept": kept,
        "machine": bench_http.machine(),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
