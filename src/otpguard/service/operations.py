"""What the shells read and change through the Verifier, beside verifications.

The web layer, the dashboard, the alert job and the CLI go through these methods,
never through the store: API keys, readiness, events and their per-minute counts,
statistics, alerts, and the webhook endpoints and their delivery log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

from ..apikeys import KeyCache, authenticate, create_api_key
from ..errors import NotFound
from ..events import Event
from ..stats import Stats, stats_for
from ..stores.base import Alert, ApiKey, EventCount, EventQuery
from ..stores.webhooks import DeliveryFilters, WebhookDelivery, WebhookEndpoint, WebhookStore
from ..webhook_delivery import WebhookOutbox, WebhookWorker
from ..webhooks import EndpointSet, set_endpoint
from .base import VerifierBase


class Operations(VerifierBase):
    """API keys, events, statistics, alerts and webhooks, for the shells."""

    # -- API keys ---------------------------------------------------------------------

    async def authenticate(self, presented: str | None, cache: KeyCache | None = None) -> ApiKey:
        """The live API key matching ``presented`` (``og_<id>_<secret>``), or
        ``Unauthorized``; through ``cache`` (the app's) when one is given."""
        if cache is not None:
            return await cache.authenticate(self.store, presented)
        return await authenticate(self.store, presented)

    async def api_key(self, key_id: str) -> ApiKey | None:
        """The key's record (revoked ones too), None if there is no such key."""
        return await self.store.get_api_key(key_id)

    async def api_keys(self) -> list[ApiKey]:
        """Every key's record, revoked ones included."""
        return await self.store.list_api_keys()

    async def create_api_key(self, name: str, scopes: tuple[str, ...]) -> tuple[ApiKey, str]:
        """A new key: its record and the key itself, which is shown once."""
        return await create_api_key(self.store, name, scopes, self.clock())

    async def revoke_api_key(self, key_id: str) -> bool:
        """Revoke the key from now on; False if there is no such live key."""
        return await self.store.revoke_api_key(key_id, self.clock())

    # -- health, events, statistics -------------------------------------------------

    async def health(self) -> None:
        """Raise ``StorageError`` unless the store answers (``/readyz``)."""
        await self.store.health()

    async def events(self, query: EventQuery) -> list[Event]:
        """The stored events ``query`` selects, newest first."""
        return await self.store.list_events(query)

    async def event_counts(
        self, since: float, until: float, families: Sequence[str]
    ) -> list[EventCount]:
        """The per-minute event counts of ``families`` in ``[since, until)``."""
        return await self.store.list_event_counts(since, until, families)

    async def top_event_counts(
        self, family: str, since: float, until: float, limit: int
    ) -> list[tuple[str, int]]:
        """The ``limit`` busiest kinds of ``family`` in ``[since, until)``, most first."""
        return await self.store.top_event_counts(family, since, until, limit)

    async def recent_count(self, key: str, window: int, *, now: float | None = None) -> int:
        """How many entries a rate key (a budget, a conversion counter) holds in the
        ``window`` seconds up to ``now`` (default: the clock's now)."""
        return await self.store.count(key, window, self.clock() if now is None else now)

    async def stats(self, window: int) -> Stats:
        """The figures of the last ``window`` seconds (``/v1/admin/stats``, the dashboard)."""
        return await stats_for(self.store, self.settings.alerts, self.clock(), window)

    # -- alerts -------------------------------------------------------------------------

    async def alerts(self, *, status: str | None = None, since: float | None = None) -> list[Alert]:
        """The stored alerts, by ``status`` (``open``, ``resolved``) and updated since."""
        return await self.store.list_alerts(since=since, status=status)

    async def save_alert(self, alert: Alert) -> None:
        """Store an alert as it is now (opened, updated or resolved)."""
        await self.store.put_alert(alert)

    # -- webhooks -----------------------------------------------------------------------

    @property
    def offers_webhooks(self) -> bool:
        """Whether the store keeps webhook endpoints and deliveries."""
        return isinstance(self.store, WebhookStore)

    def _webhook_store(self) -> WebhookStore:
        if not isinstance(self.store, WebhookStore):
            raise NotFound("this store keeps no webhooks")
        return self.store

    def open_webhooks(self) -> WebhookWorker | None:
        """Give the Verifier its webhook outbox (``self.webhooks``) and return the
        worker that delivers it; None when the store keeps no webhooks."""
        if not isinstance(self.store, WebhookStore):
            return None
        outbox = WebhookOutbox(self.store, self.settings.webhooks)
        self.webhooks = outbox
        return WebhookWorker(
            self.store, self.keyring, self.settings.webhooks, outbox, clock=self.clock
        )

    async def set_webhook_endpoint(self, scope: str, url: str, *, rotate: bool) -> EndpointSet:
        """Create ``scope``'s endpoint or change its URL; a new secret when ``rotate``."""
        return await set_endpoint(
            self._webhook_store(),
            self.keyring,
            scope,
            url,
            self.clock(),
            self.settings.webhooks,
            rotate=rotate,
        )

    async def delete_webhook_endpoint(self, scope: str) -> bool:
        """Delete ``scope``'s endpoint; False if it had none."""
        return await self._webhook_store().delete_webhook_endpoint(scope)

    async def webhook_endpoints(self) -> list[WebhookEndpoint]:
        """Every webhook endpoint (an API key's or a /v2 service's); ``NotFound`` when
        the store keeps no webhooks."""
        return await self._webhook_store().list_webhook_endpoints()

    async def webhook_deliveries(self, **filters: Unpack[DeliveryFilters]) -> list[WebhookDelivery]:
        """The delivery log, newest first: only ``endpoint_id``'s rows, only those with
        ``status``, those before ``before_id`` (to page on), at most ``limit`` (100);
        empty when the store keeps no webhooks."""
        if not isinstance(self.store, WebhookStore):
            return []
        return await self.store.list_webhook_deliveries(**filters)
