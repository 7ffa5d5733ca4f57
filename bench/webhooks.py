"""What webhooks cost a start: ``Verifier.start`` timed in three setups, interleaved.

* ``none``: the API key has no webhook endpoint (the outbox looks at its cache only);
* ``queued``: the key has an endpoint: each start writes its two outbox rows;
* ``held``: as ``queued``, with the worker running and the receiver holding every
  POST open until the end (the app is "slow"): starts must not notice.

    .venv/bin/python bench/webhooks.py [-n 600] [--store sqlite-file|memory]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py sits beside this script: drop this directory from sys.path, or it would
# shadow the standard library's ``http`` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import random  # noqa: E402 - after the sys.path change above
import statistics  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import threading  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402 - after the sys.path change above
from typing import Any  # noqa: E402 - after the sys.path change above

from otpguard.codes import new_secret_hex  # noqa: E402 - after the sys.path change above
from otpguard.config import Settings, load_settings  # noqa: E402 - after the sys.path change above
from otpguard.service import Verifier  # noqa: E402 - after the sys.path change above
from otpguard.stores import store_from_url  # noqa: E402 - after the sys.path change above
from otpguard.stores.webhooks import WebhookStore  # noqa: E402 - after the sys.path change above
from otpguard.transports.memory import MemoryTransport  # noqa: E402 - after the sys.path change above
from otpguard.webhook_delivery import WebhookOutbox, WebhookWorker  # noqa: E402 - after the sys.path change above
from otpguard.webhooks import key_scope, set_endpoint  # noqa: E402 - after the sys.path change above

RELEASE = threading.Event()
ENTERED = threading.Event()
RECEIVED = [0]


class Holding(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        RECEIVED[0] += 1
        ENTERED.set()
        RELEASE.wait(timeout=120)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def settings_for(store: str, data_dir: Path) -> Settings:
    return load_settings(
        env={},
        data_dir=data_dir,
        store=store,
        secret_keys=[new_secret_hex()],
        transport="memory",
        log_events=False,
        limit_phone="off",
        limit_ip="off",
        limit_network="off",
        limit_prefix="off",
        limit_country="off",
        limit_global="off",
        allowlist=["+447"],  # fraud rules and admission skip allowlisted numbers
        webhook_timeout=30.0,
    )


async def measure(n: int, store_url: str, data_dir: Path, url: str) -> dict[str, list[float]]:
    settings = settings_for(store_url, data_dir)
    times: dict[str, list[float]] = {"none": [], "queued": [], "held": []}
    async with Verifier(settings, store_from_url(store_url), MemoryTransport()) as v:
        store = v.store
        assert isinstance(store, WebhookStore)
        outbox = WebhookOutbox(store, settings.webhooks)
        v.webhooks = outbox
        await set_endpoint(store, v.keyring, key_scope("hooked"), url, time.time(),
                           production=False, allow_private=False)  # fmt: skip
        await outbox.refresh()
        worker = WebhookWorker(store, v.keyring, settings.webhooks, outbox)
        stop = asyncio.Event()
        job: asyncio.Task[None] | None = None
        order = [kind for kind in times for _ in range(n)]
        random.shuffle(order)
        # "held" runs last, with the worker stuck on the receiver; the other two are
        # interleaved before it, the worker not running.
        order = [k for k in order if k != "held"] + ["held"] * n
        for i, kind in enumerate(order):
            if kind == "held" and job is None:
                job = asyncio.create_task(worker.run(stop))
                await asyncio.to_thread(ENTERED.wait, 60)
            owner = "other" if kind == "none" else "hooked"
            t0 = time.perf_counter()
            await v.start(f"+44740{i:07d}", owner=owner, client_ip="198.51.100.7")
            times[kind].append(time.perf_counter() - t0)
        stop.set()
        RELEASE.set()
        if job is not None:
            await job
    return times


def report(times: dict[str, list[float]]) -> None:
    print(f"{'setup':<8} {'n':>5} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8}")
    for kind, ts in times.items():
        ms = sorted(t * 1000 for t in ts)
        q = statistics.quantiles(ms, n=100)
        print(f"{kind:<8} {len(ms):>5} {statistics.median(ms):>10.3f} {q[89]:>8.3f} {q[98]:>8.3f}")
    print(f"webhooks the held receiver was holding at the end: {RECEIVED[0]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=600)
    p.add_argument("--store", choices=["sqlite-file", "memory"], default="sqlite-file")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Holding)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/bench.db" if args.store == "sqlite-file" else "sqlite://:memory:"
        report(asyncio.run(measure(args.n, store, Path(tmp), url)))
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
