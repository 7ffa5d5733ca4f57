"""The webhook outbox (fed by the Verifier) and the worker that posts it.

The Verifier's only part is :meth:`WebhookOutbox.enqueue`, awaited after each store
write of events: one more row per event whose API key has an endpoint, in the
store (durable across restarts). It never raises (a failure is logged; the
verification's answer stands) and never talks to the app: the app's slowness
cannot slow a verification. Endpoints are read from a cache refreshed every
``ENDPOINT_REFRESH`` seconds, so an instance learns of another's change that late.

Bounded: at most ``webhook_max_pending`` undelivered rows per endpoint (more are
dropped and counted in the log); ``refused`` webhooks only for the first refusal of
its kind in a minute (as events are stored, ``refusals.py``) and at most
``webhook_refused_per_minute`` per endpoint and process; rows are purged
``webhook_retention_days`` after they were made.

The worker claims due rows (atomically: two workers never hold one row), posts each
with a bounded timeout, and records the attempt. 2xx: delivered. Anything else is
retried with exponential backoff and jitter until ``webhook_max_attempts`` or
``webhook_max_age``, then ``failed``. A 3xx is not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import httpx

from .clock import Clock, system_clock
from .codes import Keyring
from .config import WebhooksSection
from .errors import StorageError
from .events import Event
from .stores.base import Store
from .stores.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookStore,
)
from .version import VERSION
from .webhook_signature import HEADER, sign_webhook
from .webhooks import (
    ROUTE,
    SERVICE_FLAG,
    encode,
    is_public_host,
    key_scope,
    payload,
    service_scope,
    signing_secret,
    webhook_for,
)

log = logging.getLogger("otpguard.webhooks")

ENDPOINT_REFRESH = 5.0  # seconds an endpoint cache is trusted
BACKOFF_BASE = 10.0  # seconds before the second attempt; doubled each time
BACKOFF_CAP = 3600.0
LEASE_SLACK = 30.0  # a claim outlives the POST's timeout by this much
BATCH = 20  # rows per claim, posted concurrently
POLL = 1.0  # seconds between claims when the queue is idle
PURGE_EVERY = 3600.0
USER_AGENT = f"otpguard-webhooks/{VERSION}"


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 10 s, 20 s,
    40 s, ... capped at an hour, times a jitter in [0.5, 1)."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, attempts - 1))
    jitter = rng.random() if rng is not None else random.random()
    return delay * (0.5 + jitter / 2)


def _named(event: Event) -> bool:
    """Whether the event names its verification's /v2 service (a row that has one)."""
    return isinstance(event.details.get("service"), str)


class WebhookOutbox:
    """The Verifier's side: events in, outbox rows out."""

    def __init__(self, store: WebhookStore, section: WebhooksSection) -> None:
        self.store = store
        self.section = section
        self.endpoints: dict[str, WebhookEndpoint] = {}  # scope -> endpoint
        self._loaded_at: float | None = None
        self._refused: dict[str, tuple[int, int]] = {}  # endpoint id -> (minute, count)
        self.dropped = 0  # rows not queued (cap, quota, store failure)
        self.wake = asyncio.Event()

    async def refresh(self) -> None:
        endpoints = await self.store.list_webhook_endpoints()
        self.endpoints = {e.scope: e for e in endpoints}
        self._loaded_at = time.monotonic()

    async def current(self) -> dict[str, WebhookEndpoint]:
        loaded = self._loaded_at
        if loaded is None or time.monotonic() - loaded > ENDPOINT_REFRESH:
            try:
                await self.refresh()
            except StorageError:
                log.warning("webhook endpoints could not be read; using the last known")
                self._loaded_at = time.monotonic()  # do not ask again on every event
        return self.endpoints

    def _refused_allowed(self, endpoint: WebhookEndpoint, ts: float) -> bool:
        minute = int(ts // 60)
        seen_minute, n = self._refused.get(endpoint.id, (minute, 0))
        n = n if seen_minute == minute else 0
        if n >= self.section.refused_per_minute:
            return False
        self._refused[endpoint.id] = (minute, n + 1)
        return True

    def _endpoint_for(
        self, event: Event, route: str | None, services: dict[str, str]
    ) -> WebhookEndpoint | None:
        """The service's endpoint (the request's, else the verification's), else the key's."""
        sid = event.details.get("service") or services.get(event.verification_id or "")
        for scope in (route, service_scope(sid) if sid else None):
            if scope is not None and scope in self.endpoints:
                return self.endpoints[scope]
        return self.endpoints.get(key_scope(event.owner)) if event.owner else None

    async def _services(self, events: Sequence[Event], route: str | None) -> dict[str, str]:
        """verification id -> /v2 service SID for the events that do not name theirs
        (``details["service"]``, from the verification's row): those of verifications
        started before rows named it, whose flag the /v2 API kept then. Read from the
        store only when some service has an endpoint and no /v2 route named it."""
        if route is not None or not any(s.startswith("service:") for s in self.endpoints):
            return {}
        ids = {e.verification_id for e in events if e.verification_id and not _named(e)}
        if not ids or not isinstance(self.store, Store):
            return {}
        flags = await self.store.get_flags(
            [SERVICE_FLAG + i for i in sorted(ids)], max(e.ts for e in events)
        )
        return {key.removeprefix(SERVICE_FLAG): sid for key, sid in flags.items()}

    def rows(
        self, events: Sequence[Event], services: dict[str, str] | None = None
    ) -> list[WebhookDelivery]:
        out = []
        route = ROUTE.get()
        for event in events:
            endpoint = self._endpoint_for(event, route, services or {})
            found = webhook_for(event) if endpoint is not None else None
            if endpoint is None or found is None:
                continue
            name, status = found
            if name == "refused" and not self._refused_allowed(endpoint, event.ts):
                self.dropped += 1
                continue
            body = encode(payload(event, name, status))
            out.append(
                WebhookDelivery(f"{event.id}.{endpoint.id}", endpoint.id, name, body,
                                created_at=event.ts, next_at=event.ts)
            )  # fmt: skip
        return out

    async def enqueue(self, events: Sequence[Event]) -> None:
        try:
            if not any(e.owner for e in events) or not await self.current():
                return
            rows = self.rows(events, await self._services(events, ROUTE.get()))
            if not rows:
                return
            added = await self.store.enqueue_webhooks(rows, self.section.max_pending)
            if added < len(rows):
                self.dropped += len(rows) - added
                log.warning("%d webhooks dropped: endpoint queue full", len(rows) - added)
            self.wake.set()
        except Exception:  # never turn a verification's answer into an error
            self.dropped += len(events)
            log.warning("webhooks for %d events were not queued", len(events), exc_info=True)


class WebhookWorker:
    """Claims due rows and posts them; one per app instance, any number per store."""

    def __init__(
        self,
        store: WebhookStore,
        keyring: Keyring,
        section: WebhooksSection,
        outbox: WebhookOutbox,
        *,
        clock: Clock = system_clock,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store, self.keyring, self.section, self.outbox = store, keyring, section, outbox
        self.clock = clock
        self.rng = rng
        self.client = client  # None: one client per batch, closed after it
        self._last_purge = float("-inf")

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self.client is not None:
            yield self.client
            return
        async with httpx.AsyncClient(
            timeout=self.section.timeout, follow_redirects=False, trust_env=False
        ) as client:
            yield client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def run_once(self) -> int:
        """Claim and post one batch; returns how many rows were attempted."""
        now = self.clock()
        lease = secrets.token_hex(8)
        until = now + self.section.timeout + LEASE_SLACK
        claimed = await self.store.claim_webhooks(now, BATCH, lease, until)
        if claimed:
            await self.outbox.current()
            if any(self._endpoint(d.endpoint_id) is None for d in claimed):
                await self.outbox.refresh()  # set on another server moments ago?
            async with self._http() as http:
                await asyncio.gather(*(self._attempt(http, d) for d in claimed))
        return len(claimed)

    async def purge(self) -> int:
        horizon = self.section.retention_days * 86400.0
        return await self.store.purge_webhooks(self.clock() - horizon)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                busy = 0
                try:
                    busy = await self.run_once()
                    if time.monotonic() - self._last_purge > PURGE_EVERY:
                        self._last_purge = time.monotonic()
                        await self.purge()
                except StorageError:
                    log.warning("webhook worker: store unavailable")
                if busy:
                    continue
                self.outbox.wake.clear()
                waiter = asyncio.ensure_future(self.outbox.wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait(
                        {waiter, stopper}, timeout=POLL, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    waiter.cancel()
                    stopper.cancel()
        finally:
            await self.aclose()

    def _endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        return next((e for e in self.outbox.endpoints.values() if e.id == endpoint_id), None)

    async def _attempt(self, http: httpx.AsyncClient, d: WebhookDelivery) -> None:
        endpoint = self._endpoint(d.endpoint_id)
        start = time.monotonic()
        code: int | None = None
        error = ""
        secret = signing_secret(self.keyring, endpoint) if endpoint is not None else None
        if endpoint is None:
            error = "endpoint removed or replaced"
        elif secret is None:
            error = "signing key retired: set the webhook again with --rotate-secret"
        else:
            code, error = await self._post(http, endpoint, d, secret)
        latency = int((time.monotonic() - start) * 1000)
        now = self.clock()
        attempt = WebhookAttempt(now, code, latency, error)
        if code is not None and 200 <= code < 300:
            status, next_at = DELIVERED, now
        elif (
            endpoint is None
            or secret is None
            or d.attempts >= self.section.max_attempts
            or now - d.created_at >= self.section.max_age
        ):
            status, next_at = FAILED, now
        else:
            status, next_at = PENDING, now + backoff(d.attempts, self.rng)
        try:
            await self.store.finish_webhook(
                d.id, d.lease, attempt, status, next_at, self.section.max_attempts
            )
        except StorageError:
            log.warning("webhook %s: its attempt could not be recorded", d.id)

    async def _post(
        self, http: httpx.AsyncClient, endpoint: WebhookEndpoint, d: WebhookDelivery, secret: str
    ) -> tuple[int | None, str]:
        body = d.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            HEADER: sign_webhook(body, secret, int(self.clock())),
            "Otpguard-Event-Id": d.id.split(".", 1)[0],
            "Otpguard-Delivery-Attempt": str(d.attempts),
        }
        try:
            if not await self._target_allowed(endpoint.url):
                return None, "refused: the URL resolves to a private or loopback address"
            response = await http.post(endpoint.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return None, "timeout"
        except httpx.HTTPError as exc:
            return None, f"connection failed ({type(exc).__name__})"
        if 300 <= response.status_code < 400:
            return response.status_code, "redirect not followed"
        if response.status_code >= 300:
            return response.status_code, f"HTTP {response.status_code}"
        return response.status_code, ""

    async def _target_allowed(self, url: str) -> bool:
        """In production (unless private targets are allowed) every address the host
        resolves to must be public. (A name that changes between this look-up and the
        connection is not caught: see docs/webhooks.md.)"""
        if not self.section.production or self.section.allow_private:
            return True
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not is_public_host(host):
            return False
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            return True  # the POST will fail and say so
        return all(is_public_host(str(info[4][0])) for info in infos)
