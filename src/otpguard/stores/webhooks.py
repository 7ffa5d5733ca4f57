"""The webhook outbox's storage contract, and what the two SQL stores share of it.

Every store (SQLite, PostgreSQL, Redis) mixes :class:`WebhookStore` in; the
backend code lives beside this module (``webhooks_sqlite.py``, ``webhooks_pg.py``,
``webhooks_redis.py``), not in the big store modules. ``tests/contracts/
test_webhook_contract.py`` runs the same suite over every backend.

Two records:

* :class:`WebhookEndpoint`: one URL per scope (``key:<api key id>``). Its signing
  secret is never stored: it is derived from the keyring key named by ``key_id``
  (``webhooks.signing_secret``).
* :class:`WebhookDelivery`: one event for one endpoint, the outbox row and its
  delivery log at once (attempts, the last status code, latency and error, the
  next retry). ``status`` is ``pending`` until ``delivered`` or ``failed``.

A worker *claims* due rows atomically (their ``next_at`` moves to a lease's end
and they carry the claim's ``lease`` token), so two workers, on one server or
several, never post the same row at once; a worker that died leaves rows that
come due again when the lease ends. Only the claim's holder can finish a row.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)


@dataclass(frozen=True)
class WebhookEndpoint:
    id: str  # "we_" + 16 hex; part of the derivation of the signing secret
    scope: str  # "key:<api key id>"
    url: str
    key_id: str  # the keyring key the secret is derived from
    created_at: float


@dataclass(frozen=True)
class WebhookAttempt:
    at: float
    status_code: int | None  # None: no HTTP answer (timeout, refused connection, ...)
    latency_ms: int
    error: str = ""  # short, ours: never the receiver's body

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WebhookAttempt:
        code = d.get("status_code")
        return cls(
            float(d["at"]), None if code is None else int(code), int(d["latency_ms"]), d["error"]
        )


@dataclass(frozen=True)
class WebhookDelivery:
    id: str  # "<event id>.<endpoint id>": one row per event and endpoint
    endpoint_id: str
    event_type: str  # the webhook's name: started, sent, approved, ...
    payload: str  # the JSON body posted, exactly as signed
    created_at: float
    next_at: float  # due at (pending), or when it was finished
    status: str = PENDING
    attempts: int = 0
    lease: str = ""  # the current claim's token; "" when unclaimed
    log: tuple[WebhookAttempt, ...] = field(default=())

    @property
    def last(self) -> WebhookAttempt | None:
        return self.log[-1] if self.log else None


def log_to_json(log: Sequence[WebhookAttempt]) -> str:
    return json.dumps([a.to_dict() for a in log], separators=(",", ":"))


def log_from_json(raw: str | list[Any] | None) -> tuple[WebhookAttempt, ...]:
    items = json.loads(raw) if isinstance(raw, str) else (raw or [])
    return tuple(WebhookAttempt.from_dict(a) for a in items)


class DeliveryFilters(TypedDict, total=False):
    """What :meth:`WebhookStore.list_webhook_deliveries` filters on, for the callers
    that pass the filters on (the Verifier, the CLI)."""

    endpoint_id: str | None
    status: str | None
    before_id: str | None
    limit: int


class WebhookStore(abc.ABC):
    """The outbox operations every backend implements, each atomic."""

    @abc.abstractmethod
    async def put_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Insert, or replace the endpoint of the same scope."""

    @abc.abstractmethod
    async def delete_webhook_endpoint(self, scope: str) -> bool:
        """Remove the scope's endpoint (its undelivered rows fail when claimed)."""

    @abc.abstractmethod
    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]:
        """Every endpoint, by scope."""

    @abc.abstractmethod
    async def enqueue_webhooks(
        self, deliveries: Sequence[WebhookDelivery], max_pending: int
    ) -> int:
        """Insert each delivery unless its id exists already or its endpoint has
        ``max_pending`` pending rows (checked per row; concurrent enqueues may pass
        the cap by at most their number). Returns how many were inserted."""

    @abc.abstractmethod
    async def claim_webhooks(
        self, now: float, limit: int, lease: str, lease_until: float
    ) -> list[WebhookDelivery]:
        """Atomically take up to ``limit`` pending rows due by ``now`` (oldest due
        first): each gets ``lease``, ``next_at = lease_until`` and one more attempt.
        Returned as they are after the claim. No row is in two claims at once."""

    @abc.abstractmethod
    async def finish_webhook(
        self,
        delivery_id: str,
        lease: str,
        attempt: WebhookAttempt,
        status: str,
        next_at: float,
        max_log: int,
    ) -> bool:
        """Record one attempt if ``lease`` still holds the row: its log gains
        ``attempt`` (keeping the newest ``max_log``), its status becomes ``status``
        and its ``next_at`` ``next_at``, the lease is dropped. False otherwise (the
        lease ran out and another claim took the row, or the row is gone)."""

    @abc.abstractmethod
    async def list_webhook_deliveries(
        self,
        *,
        endpoint_id: str | None = None,
        status: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[WebhookDelivery]:
        """Newest first (by id), filtered; ``before_id`` pages on."""

    @abc.abstractmethod
    async def purge_webhooks(self, before: float) -> int:
        """Delete rows created before ``before``, whatever their status."""


# -- shared by the SQL stores ------------------------------------------------------------

W_COLUMNS = (
    "id, endpoint_id, event_type, payload, created_at, next_at, status, attempts, lease, log"
)
EP_COLUMNS = "id, scope, url, key_id, created_at"


def delivery_from_row(row: Sequence[Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row[0],
        endpoint_id=row[1],
        event_type=row[2],
        payload=row[3],
        created_at=float(row[4]),
        next_at=float(row[5]),
        status=row[6],
        attempts=int(row[7]),
        lease=row[8],
        log=log_from_json(row[9]),
    )


def endpoint_from_row(row: Sequence[Any]) -> WebhookEndpoint:
    return WebhookEndpoint(row[0], row[1], row[2], row[3], float(row[4]))


def delivery_row(d: WebhookDelivery) -> tuple[Any, ...]:
    return (
        d.id, d.endpoint_id, d.event_type, d.payload, d.created_at, d.next_at, d.status,
        d.attempts, d.lease, log_to_json(d.log),
    )  # fmt: skip


def list_conditions(
    mark: str, endpoint_id: str | None, status: str | None, before_id: str | None
) -> tuple[str, list[Any]]:
    where, params = [], []
    for cond, value in (("endpoint_id", endpoint_id), ("status", status), ("id <", before_id)):
        if value is not None:
            where.append(f"{cond} {mark}" if cond.endswith("<") else f"{cond} = {mark}")
            params.append(value)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def trimmed_log(raw: str | list[Any] | None, attempt: WebhookAttempt, max_log: int) -> str:
    return log_to_json([*log_from_json(raw), attempt][-max_log:])
