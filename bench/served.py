"""What the server says of its own latency: ``/metrics``' request histogram
(``otpguard_http_request_duration_seconds``), read before and after a run and diffed.

``http.py`` prints it beside wrk's figures for the run at half load: the time a
request spent inside the app (from the latency middleware in, so not the time it
waited for the event loop before that, nor wrk's own), to the resolution of the
histogram's buckets.
"""

from __future__ import annotations

import math
import re

import httpx

METRIC = "otpguard_http_request_duration_seconds_bucket"
#: The routes a start + check pair calls.
PAIR_ROUTES = ("/v1/verifications", "/v1/verifications/check")
_LINE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

#: route -> [(bucket's upper bound in seconds, requests at most that long), ...]
Histogram = dict[str, list[tuple[float, float]]]


def parse(text: str, routes: tuple[str, ...] = PAIR_ROUTES) -> Histogram:
    """The buckets of ``routes``' successful (2xx) requests, summed over methods."""
    sums: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None or m.group(1) != METRIC:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        route = labels.get("route", "")
        if route not in routes or not labels.get("status", "").startswith("2"):
            continue
        le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        bucket = sums.setdefault(route, {})
        bucket[le] = bucket.get(le, 0.0) + float(m.group(3))
    return {route: sorted(b.items()) for route, b in sums.items()}


def diff(after: Histogram, before: Histogram) -> Histogram:
    """The requests of the run between two readings."""
    out: Histogram = {}
    for route, buckets in after.items():
        was = dict(before.get(route, []))
        out[route] = [(le, n - was.get(le, 0.0)) for le, n in buckets]
    return out


def merged(h: Histogram) -> list[tuple[float, float]]:
    """Every route's buckets added up (the histogram's bounds are the same for all)."""
    total: dict[float, float] = {}
    for buckets in h.values():
        for le, n in buckets:
            total[le] = total.get(le, 0.0) + n
    return sorted(total.items())


def within(buckets: list[tuple[float, float]], seconds: float) -> float | None:
    """The share of requests that took at most ``seconds`` (a bucket's bound); None
    when there were none, or ``seconds`` is no bound of the histogram's."""
    count = dict(buckets)
    total = count.get(math.inf, 0.0)
    if not total or seconds not in count:
        return None
    return count[seconds] / total


def quantile_bound(buckets: list[tuple[float, float]], q: float = 0.99) -> float | None:
    """The smallest bucket bound that at least ``q`` of the requests kept to (inf when
    only the last bucket holds them); None when there were no requests."""
    total = dict(buckets).get(math.inf, 0.0)
    if not total:
        return None
    return next(le for le, n in buckets if n >= q * total)


def reading(base_url: str, monitor_key: str) -> Histogram:
    """The server's histogram now (``/metrics`` needs a key with the monitor scope)."""
    r = httpx.get(
        f"{base_url}/metrics", headers={"Authorization": f"Bearer {monitor_key}"}, timeout=10
    )
    r.raise_for_status()
    return parse(r.text)
