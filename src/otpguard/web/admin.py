"""Monitoring for the HTTP app: ``/metrics``, the ``/v1/admin`` API and the alert job.

``install(app)`` (listed in ``otpguard.web.app.EXTENSIONS``) builds one
:class:`Monitor` per app: a Prometheus registry fed by a Verifier listener and a
latency middleware, the alert evaluator with its sink dispatcher (both added to
``app.state.jobs``), kept at ``app.state.monitor`` for the dashboard.

The reads (``/metrics``, stats, events, alerts) need an API key with the
``monitor`` scope (``admin`` implies it); ``POST /v1/admin/alerts/evaluate`` needs
``admin``. Others get 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from prometheus_client import start_http_server

from ..alerts import AlertEvaluator
from ..config import Settings
from ..errors import InvalidRequest
from ..events import Event
from ..limits import normalize_ip
from ..metrics import CONTENT_TYPE_LATEST, LatencyMiddleware, Metrics
from ..service import Verifier
from ..sinks import Dispatcher, sinks_from_section
from ..stats import parse_window
from ..stores.base import Alert, ApiKey
from .api import ERRORS, VerifierDep, admin_key, event_query, iso, monitor_key, number_hash_of

log = logging.getLogger("otpguard.web.admin")

RECENT_ALERTS = 7 * 86400  # resolved alerts listed for this long
MAX_PAGE = 500

Admin = Annotated[ApiKey, Depends(admin_key)]
ReadOnly = Annotated[ApiKey, Depends(monitor_key)]


@dataclass
class Monitor:
    metrics: Metrics
    dispatcher: Dispatcher
    alerts: AlertEvaluator


def monitor_of(request: Request) -> Monitor:
    m: Monitor = request.app.state.monitor
    return m


def alert_out(a: Alert) -> dict[str, Any]:
    details = {k: v for k, v in a.details.items() if k != "notified"}
    return {
        "id": a.id,
        "rule": a.rule,
        "subject": a.subject,
        "status": a.status,
        "message": a.message,
        "opened_at": iso(a.opened_at),
        "updated_at": iso(a.updated_at),
        "resolved_at": iso(a.resolved_at) if a.resolved_at is not None else None,
        "details": details,
    }


def event_out(e: Event) -> dict[str, Any]:
    out = e.to_dict()
    out["time"] = iso(e.ts)
    return out


async def open_and_recent_alerts(verifier: Verifier, now: float) -> list[Alert]:
    alerts = await verifier.alerts(status="open")
    seen = {a.id for a in alerts}
    recent = await verifier.alerts(since=now - RECENT_ALERTS)
    return alerts + [a for a in recent if a.id not in seen]


router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get("/stats", responses=ERRORS)
async def admin_stats(verifier: VerifierDep, _: ReadOnly, window: str = "1h") -> dict[str, Any]:
    """Totals, conversion overall and per country, top numbers (masked) and IPs,
    refusals by reason, delivery failures and estimated spend over ``window``
    (``15m``, ``1h``, ``24h``, ``7d``, ...)."""
    return (await verifier.stats(parse_window(window))).as_dict()


@router.get("/events", responses=ERRORS)
async def admin_events(
    verifier: VerifierDep,
    _: ReadOnly,
    type: Annotated[list[str] | None, Query(max_length=20)] = None,
    number: Annotated[str | None, Query(max_length=320)] = None,
    ip: Annotated[str | None, Query(max_length=64)] = None,
    country: Annotated[str | None, Query(max_length=2, min_length=2)] = None,
    since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    until: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    before: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """Newest first. ``number`` (or an email address) is normalised and matched by its
    keyed hash under every listed key; pass ``next_before`` from the previous page as
    ``before`` for the next one."""
    number_hash = number_hash_of(verifier, number)
    client_ip = None if ip is None else normalize_ip(ip)
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("'since' must be before 'until'")
    query = event_query(tuple(type or ()), number_hash, country, since, until)
    page = replace(query, client_ip=client_ip, before_id=before, limit=limit + 1)
    events = await verifier.events(page)
    more = len(events) > limit
    events = events[:limit]
    return {
        "events": [event_out(e) for e in events],
        "next_before": events[-1].id if more and events else None,
    }


@router.get("/alerts", responses=ERRORS)
async def admin_alerts(verifier: VerifierDep, _: ReadOnly) -> dict[str, Any]:
    """Open alerts, then those resolved in the last 7 days."""
    alerts = await open_and_recent_alerts(verifier, verifier.clock())
    return {
        "open": [alert_out(a) for a in alerts if a.status == "open"],
        "recent": [alert_out(a) for a in alerts if a.status != "open"],
    }


@router.post("/alerts/evaluate", responses=ERRORS)
async def admin_evaluate(request: Request, _: Admin) -> dict[str, Any]:
    """Run one alert evaluation now (the job runs every ``alert_interval`` seconds)."""
    result = await monitor_of(request).alerts.evaluate()
    return {
        "opened": [alert_out(a) for a in result.opened],
        "resolved": [alert_out(a) for a in result.resolved],
        "open": [alert_out(a) for a in result.open],
    }


metrics_router = APIRouter()


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, _: ReadOnly) -> Response:
    """Prometheus exposition (monitor key, or the unauthenticated ``metrics_port``)."""
    return Response(monitor_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _metrics_port_job(settings: Settings, m: Metrics) -> Any:
    async def serve_metrics(stop: asyncio.Event) -> None:
        assert settings.metrics_port is not None
        server, thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=m.registry
        )
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
        try:
            await stop.wait()
        finally:
            server.shutdown()
            server.server_close()
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(thread.join, 5)

    return serve_metrics


def install(app: FastAPI) -> None:
    verifier: Verifier = app.state.verifier
    settings: Settings = app.state.settings
    metrics_ = Metrics()
    dispatcher = Dispatcher(sinks_from_section(settings.alerts, clock=verifier.clock))
    evaluator = AlertEvaluator(verifier, dispatcher, metrics=metrics_)
    verifier.listeners.append(metrics_.observe)
    app.state.monitor = Monitor(metrics_, dispatcher, evaluator)
    app.state.jobs.append(dispatcher.run)
    app.state.jobs.append(evaluator.run)
    if settings.metrics_port is not None:
        app.state.jobs.append(_metrics_port_job(settings, metrics_))
    app.include_router(router)
    app.include_router(metrics_router)
    app.add_middleware(LatencyMiddleware, metrics=metrics_)
