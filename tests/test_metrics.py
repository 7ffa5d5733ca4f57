"""/metrics: admin-protected, parseable, bounded labels, never a number, an IP or a code."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.events import Event
from otpguard.metrics import MAX_VALUES, Metrics
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from .conftest import UK_MOBILE

ADMIN = ("verify", "admin")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_the_traffic_and_parse(
    api_factory: Callable[..., Any], settings: Settings, outbox: MemoryTransport
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE, "client_ip": "192.0.2.10"})
        assert r.status_code == 201
        vid = r.json()["id"]
        assert (await api.get(f"/v1/verifications/{vid}")).status_code == 200
        bad = "000000" if outbox.last_code(UK_MOBILE) != "000000" else "111111"
        await api.post("/v1/verifications/check", json={"id": vid, "code": bad})
        await api.post(
            "/v1/verifications/check", json={"id": vid, "code": outbox.last_code(UK_MOBILE)}
        )
        refused = await api.post("/v1/verifications", json={"to": "+449012345678"})
        assert refused.status_code == 403

        r = await api.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text

    assert value(text, "otpguard_verifications_started_total", channel="sms", country="GB") == 1
    assert value(text, "otpguard_messages_sent_total", channel="sms", kind="first") == 1
    assert value(text, "otpguard_checks_total", outcome="passed") == 1
    assert value(text, "otpguard_checks_total", outcome="failed") == 1
    assert value(text, "otpguard_refusals_total", reason="premium_rate", rule="none") == 1
    assert value(text, "otpguard_country_events_total", country="GB", kind="approved") == 1
    # Latency by route template, never the raw path with the verification id.
    assert (
        value(
            text,
            "otpguard_http_request_duration_seconds_count",
            method="GET",
            route="/v1/verifications/{verification_id}",
            status="200",
        )
        == 1
    )
    assert vid not in text
    assert (
        value(
            text,
            "otpguard_http_request_duration_seconds_count",
            method="POST",
            route="/v1/verifications",
            status="201",
        )
        == 1
    )
    for secret in (UK_MOBILE, UK_MOBILE[1:], "447400123456", "192.0.2.10", outbox.last_code()):
        assert secret not in text


async def test_metrics_need_an_admin_key(
    api_factory: Callable[..., Any], settings: Settings
) -> None:
    async with api_factory(settings, scopes=("verify",)) as api:
        assert (await api.get("/metrics")).status_code == 403
        assert (await api.get("/metrics", headers={"Authorization": ""})).status_code == 401


async def test_each_app_has_its_own_registry(
    settings_factory: Callable[..., Settings], clock: ManualClock
) -> None:
    apps = []
    for _ in range(2):
        s = settings_factory()
        v = Verifier(s, store_from_url(s.store_url), MemoryTransport(), clock=clock)
        apps.append((create_app(s, v, clock=clock, background=False), v))
    (app_a, v_a), (app_b, _) = apps
    async with app_a.router.lifespan_context(app_a), app_b.router.lifespan_context(app_b):
        await v_a.start(UK_MOBILE)
        a = app_a.state.monitor.metrics.exposition().decode()
        b = app_b.state.monitor.metrics.exposition().decode()
    assert value(a, "otpguard_verifications_started_total", channel="sms", country="GB") == 1
    assert value(b, "otpguard_verifications_started_total", channel="sms", country="GB") == 0


def test_label_values_are_bounded_and_never_numbers_or_ips() -> None:
    m = Metrics()
    m.observe(Event(type="request.refused", ts=0, reason="+447400123456", country="447400"))
    m.observe(Event(type="request.refused", ts=0, reason="192.0.2.1", rule="ip 192.0.2.1"))
    m.observe(Event(type="something.else", ts=0))
    for i in range(MAX_VALUES + 10):
        m.observe(Event(type="request.refused", ts=0, reason=f"reason_{i}"))
    text = m.exposition().decode()
    assert "447400" not in text and "192.0.2.1" not in text
    reasons = {
        labels[0][1]
        for (name, labels) in samples(text)
        if name == "otpguard_refusals_total" and labels[0][0] == "reason"
    }
    assert len(reasons) <= MAX_VALUES + 1
    assert "other" in reasons
    assert value(text, "otpguard_country_events_total", country="other", kind="refused") >= 1
    assert value(text, "otpguard_events_total", type="other") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_metrics_port_serves_without_a_key(
    settings_factory: Callable[..., Settings], clock: ManualClock
) -> None:
    port = _free_port()
    s = settings_factory(metrics_port=port, alert_interval=3600, purge_interval=3600)
    v = Verifier(s, store_from_url(s.store_url), MemoryTransport(), clock=clock)
    app = create_app(s, v, clock=clock, background=True)
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0)  # let the jobs take their first step (binding the port)
        await v.start(UK_MOBILE)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200
        assert value(r.text, "otpguard_verifications_started_total", channel="sms", country="GB")
