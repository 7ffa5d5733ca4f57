"""Webhooks in the HTTP app: the outbox on the Verifier, the worker job, the admin API.

``install(app)`` (listed in ``otpguard.web.app.EXTENSIONS``) gives the app's
Verifier a :class:`WebhookOutbox` and adds the :class:`WebhookWorker` to the
app's jobs. Routes (``admin`` scope to change, ``monitor`` to read):

* ``PUT /v1/admin/webhooks/keys/{key_id}`` ``{"url": ..., "rotate_secret": false}``:
  set an API key's endpoint; the answer carries the signing secret, once, when it is
  new (creation or rotation);
* ``DELETE /v1/admin/webhooks/keys/{key_id}``;
* ``PUT`` and ``DELETE /v1/admin/webhooks/services/{sid}``: the same for a ``/v2``
  service, whose verifications' events then go there instead of to the key's URL;
* ``GET /v1/admin/webhooks``: the endpoints (never a secret);
* ``GET /v1/admin/webhooks/deliveries``: the delivery log, newest first.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import NotFound
from ..service import Verifier
from ..stores.base import ApiKey
from ..stores.webhooks import STATUSES, WebhookDelivery
from ..webhook_delivery import WebhookOutbox
from ..webhooks import ROUTE, endpoint_out, key_scope, service_scope
from .api import ERRORS, VerifierDep, admin_key, iso, monitor_key
from .verify.services import service_exists

Admin = Annotated[ApiKey, Depends(admin_key)]
ReadOnly = Annotated[ApiKey, Depends(monitor_key)]
MAX_PAGE = 500

router = APIRouter(prefix="/v1/admin/webhooks", tags=["webhooks"])


class EndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000)
    rotate_secret: bool = False


def delivery_out(d: WebhookDelivery) -> dict[str, Any]:
    last = d.last
    return {
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "created_at": iso(d.created_at),
        "next_attempt_at": iso(d.next_at) if d.status == "pending" else None,
        "last_status_code": last.status_code if last else None,
        "last_latency_ms": last.latency_ms if last else None,
        "last_error": last.error if last else None,
        "log": [{**a.to_dict(), "at": iso(a.at)} for a in d.log],
        "payload": json.loads(d.payload),
    }


@router.put("/keys/{key_id}", responses=ERRORS)
async def put_key_endpoint(
    key_id: str, body: EndpointRequest, verifier: VerifierDep, request: Request, _: Admin
) -> dict[str, Any]:
    """Set the URL the key's verification events are posted to. ``secret`` is in the
    answer only when it is new: store it, it is not shown again."""
    if len(key_id) > 64 or await verifier.api_key(key_id) is None:
        raise NotFound("no API key with that id")
    return await _set(verifier, request, key_scope(key_id), body)


async def _set(
    verifier: Verifier, request: Request, scope: str, body: EndpointRequest
) -> dict[str, Any]:
    done = await verifier.set_webhook_endpoint(scope, body.url, rotate=body.rotate_secret)
    outbox: WebhookOutbox = request.app.state.webhooks
    await outbox.refresh()
    return {"endpoint": endpoint_out(done.endpoint), "secret": done.secret}


@router.put("/services/{service_sid}", responses=ERRORS)
async def put_service_endpoint(
    service_sid: str, body: EndpointRequest, verifier: VerifierDep, request: Request, _: Admin
) -> dict[str, Any]:
    """Set the URL a ``/v2`` service's verification events are posted to (instead of
    its API key's). ``secret`` is in the answer only when it is new."""
    if not await service_exists(verifier, service_sid):
        raise NotFound("no /v2 service with that SID")
    return await _set(verifier, request, service_scope(service_sid), body)


@router.delete("/services/{service_sid}", responses=ERRORS)
async def delete_service_endpoint(
    service_sid: str, verifier: VerifierDep, request: Request, _: Admin
) -> dict[str, Any]:
    return await _delete(verifier, request, service_scope(service_sid[:64]), "that service")


@router.delete("/keys/{key_id}", responses=ERRORS)
async def delete_key_endpoint(
    key_id: str, verifier: VerifierDep, request: Request, _: Admin
) -> dict[str, Any]:
    return await _delete(verifier, request, key_scope(key_id[:64]), "that API key")


async def _delete(verifier: Verifier, request: Request, scope: str, owner: str) -> dict[str, Any]:
    """Delete ``scope``'s endpoint; ``owner`` names it in the 404."""
    if not await verifier.delete_webhook_endpoint(scope):
        raise NotFound(f"{owner} has no webhook endpoint")
    await request.app.state.webhooks.refresh()
    return {"deleted": True}


@router.get("", responses=ERRORS)
async def list_endpoints(verifier: VerifierDep, _: ReadOnly) -> dict[str, Any]:
    endpoints = await verifier.webhook_endpoints()
    return {"endpoints": [endpoint_out(e) for e in endpoints]}


@router.get("/deliveries", responses=ERRORS)
async def list_deliveries(
    verifier: VerifierDep,
    _: ReadOnly,
    endpoint: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")$")] = None,
    before: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """Newest first; pass ``next_before`` as ``before`` for the next page."""
    rows = await verifier.webhook_deliveries(
        endpoint_id=endpoint, status=status, before_id=before, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "deliveries": [delivery_out(d) for d in rows],
        "next_before": rows[-1].id if more and rows else None,
    }


class RouteReset:
    """Every request starts with no webhook route, and leaves none behind (a /v2 route
    sets its service's, ``webhooks.ROUTE``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = ROUTE.set(None)
        try:
            await self.app(scope, receive, send)
        finally:
            ROUTE.reset(token)


def install(app: FastAPI) -> None:
    verifier: Verifier = app.state.verifier
    worker = verifier.open_webhooks()
    if worker is None:  # a store of another make: no webhooks
        return
    app.state.webhooks = verifier.webhooks
    app.state.webhook_worker = worker
    app.state.jobs.append(worker.run)
    app.include_router(router)
    app.add_middleware(RouteReset)
