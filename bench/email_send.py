"""Email starts through each email transport, in process: how long a start takes when
its code goes by a real SMTP session (STARTTLS + AUTH, or implicit TLS) to a local
aiosmtpd relay, or by HTTP to the local fake of SendGrid's Mail Send API.

    .venv/bin/python bench/email_send.py [--n 200] [--concurrency 1,8]

Every limit is raised so nothing refuses (still evaluated). Prints one line per run
(transport, concurrency, starts/s, p50/p90/p99 ms of one start) and, last, one JSON
object with every figure. Figures are for reading: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

# The repository instead of bench/ (whose http.py would shadow the standard library's).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from tests.fake_sendgrid import FakeSendGrid  # noqa: E402 - after the sys.path change above
from tests.fake_smtp import LocalRelay  # noqa: E402 - after the sys.path change above

from otpguard.codes import new_secret_hex  # noqa: E402 - after the sys.path change above
from otpguard.config import load_settings  # noqa: E402 - after the sys.path change above
from otpguard.models import Channel  # noqa: E402 - after the sys.path change above
from otpguard.service import Verifier  # noqa: E402 - after the sys.path change above
from otpguard.stores import store_from_url  # noqa: E402 - after the sys.path change above
from otpguard.transports import email_transport_from_settings  # noqa: E402 - after the sys.path change above
from otpguard.transports.memory import MemoryTransport  # noqa: E402 - after the sys.path change above

OPEN = {
    "limit_email": "off", "limit_ip": "off", "limit_network": "off",
    "admission_email_domain": "1000000/10m", "admission_global": "1000000/10m",
    "log_events": False, "email_refuse_disposable": False,
}  # fmt: skip


async def run(settings_kw: dict[str, Any], n: int, concurrency: int) -> dict[str, float]:
    settings = load_settings(env={}, store="sqlite://:memory:", secret_keys=[new_secret_hex()],
                             transport="memory", **OPEN, **settings_kw)  # fmt: skip
    otp = Verifier(settings, store_from_url(settings.store_url), MemoryTransport(),
                   email_transport=email_transport_from_settings(settings))  # fmt: skip
    latencies: list[float] = []
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            t0 = time.perf_counter()
            await otp.start(f"user{i}@bench.example", Channel.EMAIL, client_ip="10.0.0.1")
            latencies.append(time.perf_counter() - t0)

    async with otp:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"starts_per_s": round(n / wall, 1), "p50_ms": round(q[49] * 1000, 2),
            "p90_ms": round(q[89] * 1000, 2), "p99_ms": round(q[98] * 1000, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", default="1,8")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # aiosmtpd's own deprecation warnings
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp())
    for conc in [int(c) for c in args.concurrency.split(",")]:
        for tls in ("starttls", "implicit"):
            with LocalRelay(tmp, tls=tls) as relay:
                fig = asyncio.run(run(relay.settings(), args.n, conc))
                assert len(relay.inbox) == args.n
            results[f"smtp-{tls}-c{conc}"] = fig
            print(f"smtp/{tls:<9} c={conc:<3} {fig}")
        with FakeSendGrid() as fake:
            fig = asyncio.run(run(fake.settings(), args.n, conc))
            assert len(fake.sent) == args.n
        results[f"sendgrid-c{conc}"] = fig
        print(f"sendgrid       c={conc:<3} {fig}")
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
