"""``bench/served.py``: the server's own request histogram, read from a real server's
``/metrics`` before and after some requests, counts exactly those requests."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from .serverproc import fresh_number, otpguard_server
from .test_bench_roundtrips import load_bench

pytestmark = pytest.mark.slow


def bucket(le: str, route: str, status: int, n: float, method: str = "POST") -> str:
    labels = f'le="{le}",method="{method}",route="{route}",status="{status}"'
    return f"otpguard_http_request_duration_seconds_bucket{{{labels}}} {n}"


V = "/v1/verifications"
TEXT = "\n".join(
    [
        "# HELP otpguard_http_request_duration_seconds HTTP request latency by route template",
        bucket("0.005", V, 201, 3.0),
        bucket("0.025", V, 201, 9.0),
        bucket("+Inf", V, 201, 10.0),
        *(bucket(le, V, 429, 50.0) for le in ("0.005", "0.025", "+Inf")),  # refused: left out
        bucket("0.005", "/noop", 200, 7.0, "GET"),  # not a pair's route
        bucket("+Inf", "/noop", 200, 7.0, "GET"),
    ]
)


def test_the_histogram_keeps_the_pair_routes_successes_and_bounds_the_tail() -> None:
    served = load_bench("served")
    h = served.parse(TEXT)
    assert h == {"/v1/verifications": [(0.005, 3.0), (0.025, 9.0), (math.inf, 10.0)]}
    buckets = served.merged(h)
    assert served.within(buckets, 0.025) == 0.9
    assert served.within(buckets, 0.01) is None  # no such bound
    assert served.quantile_bound(buckets, 0.9) == 0.025
    assert served.quantile_bound(buckets, 0.99) == math.inf  # only +Inf holds 99 %
    assert served.quantile_bound([], 0.99) is None
    assert served.diff(h, h) == {"/v1/verifications": [(0.005, 0.0), (0.025, 0.0), (math.inf, 0.0)]}


def test_a_real_servers_reading_counts_exactly_the_requests_between(tmp_path: Path) -> None:
    served = load_bench("served")
    with otpguard_server(tmp_path) as server:
        made = server.cli("api-keys", "create", "--name", "bench-monitor", "--scope", "monitor")
        assert made.returncode == 0, made.stderr
        monitor = made.stdout.strip().splitlines()[-1]
        before = served.reading(server.base_url, monitor)
        auth = {"Authorization": f"Bearer {server.api_key}"}
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as http:
            for _ in range(3):
                r = http.post("/v1/verifications", json={"to": fresh_number()})
                assert r.status_code == 201
                vid = r.json()["id"]
                c = http.post("/v1/verifications/check",
                              json={"id": vid, "code": server.last_code(vid)})  # fmt: skip
                assert c.status_code == 200 and c.json()["valid"] is True
        run = served.diff(served.reading(server.base_url, monitor), before)
    assert {route: b[-1] for route, b in run.items()} == {
        "/v1/verifications": (math.inf, 3.0),
        "/v1/verifications/check": (math.inf, 3.0),
    }
    share = served.within(served.merged(run), 10.0)
    assert share == 1.0  # six requests, none slower than the last finite bucket
