"""The webhook outbox on PostgreSQL (mixed into ``PostgresStore``).

The claim is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
RETURNING``: concurrent claims from any number of instances skip each other's rows
instead of waiting, and no row is in two claims. Finishing is one conditional
``UPDATE`` on the lease token.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from .webhooks import (
    EP_COLUMNS,
    PENDING,
    W_COLUMNS,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookStore,
    delivery_from_row,
    delivery_row,
    endpoint_from_row,
    list_conditions,
    trimmed_log,
)

Conn = AsyncConnection[TupleRow]
TABLES = ("webhook_endpoints", "webhook_deliveries")
PURGE_BATCH = 5_000

#: The ``webhooks`` migration (PostgreSQL's seventh step).
MIGRATION: tuple[str, ...] = (
    """CREATE TABLE webhook_endpoints (
        id TEXT COLLATE "C" PRIMARY KEY,
        scope TEXT COLLATE "C" NOT NULL UNIQUE,
        url TEXT NOT NULL,
        key_id TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE webhook_deliveries (
        id TEXT COLLATE "C" PRIMARY KEY,
        endpoint_id TEXT COLLATE "C" NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        next_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        lease TEXT NOT NULL,
        log TEXT NOT NULL
    )""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at)",
    "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status)",
    "CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at)",
)

_ENQUEUE = (
    f"INSERT INTO webhook_deliveries ({W_COLUMNS}) "  # noqa: S608 - constant
    "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s WHERE (SELECT COUNT(*) FROM "
    "webhook_deliveries WHERE endpoint_id = %s AND status = %s) < %s "
    "ON CONFLICT (id) DO NOTHING"
)
_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_CLAIM = (
    "UPDATE webhook_deliveries SET lease = %s, next_at = %s, attempts = attempts + 1 "  # noqa: S608
    "WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = %s AND next_at <= %s "
    "ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED) "
    f"RETURNING {W_COLUMNS}"
)


def _lock_key(endpoint_id: str) -> int:
    """The transaction's advisory lock for one endpoint's pending rows (64 bits)."""
    digest = hashlib.sha256(b"otpguard-webhook-cap:" + endpoint_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresWebhooks(WebhookStore):
    def _conn(self, op: str) -> contextlib.AbstractAsyncContextManager[Conn]:
        raise NotImplementedError  # PostgresStore's

    async def _all(self, op: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # PostgresStore's

    async def _rowcount(self, op: str, query: str, params: Any = None) -> int:
        raise NotImplementedError  # PostgresStore's

    async def put_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        row = (endpoint.id, endpoint.scope, endpoint.url, endpoint.key_id, endpoint.created_at)
        async with self._conn("put_webhook_endpoint") as conn, conn.transaction():
            await conn.execute("DELETE FROM webhook_endpoints WHERE scope = %s", (endpoint.scope,))
            await conn.execute(
                f"INSERT INTO webhook_endpoints ({EP_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608
                row,
            )

    async def delete_webhook_endpoint(self, scope: str) -> bool:
        query = "DELETE FROM webhook_endpoints WHERE scope = %s"
        return await self._rowcount("delete_webhook_endpoint", query, (scope,)) == 1

    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]:
        query = f"SELECT {EP_COLUMNS} FROM webhook_endpoints ORDER BY scope"  # noqa: S608
        return [endpoint_from_row(r) for r in await self._all("list_webhook_endpoints", query)]

    async def enqueue_webhooks(
        self, deliveries: Sequence[WebhookDelivery], max_pending: int
    ) -> int:
        if not deliveries:
            return 0
        added = 0
        async with self._conn("enqueue_webhooks") as conn, conn.transaction():
            # One writer per endpoint at a time, so the cap is decided with the insert:
            # under READ COMMITTED two writers would each count the other's rows short.
            for endpoint_id in sorted({d.endpoint_id for d in deliveries}):  # one lock order
                await conn.execute(_LOCK, (_lock_key(endpoint_id),))
            for d in deliveries:
                cur = await conn.execute(
                    _ENQUEUE, (*delivery_row(d), d.endpoint_id, PENDING, max_pending)
                )
                added += cur.rowcount
        return added

    async def claim_webhooks(
        self, now: float, limit: int, lease: str, lease_until: float
    ) -> list[WebhookDelivery]:
        rows = await self._all("claim_webhooks", _CLAIM, (lease, lease_until, PENDING, now, limit))
        return sorted((delivery_from_row(r) for r in rows), key=lambda d: d.id)

    async def finish_webhook(
        self,
        delivery_id: str,
        lease: str,
        attempt: WebhookAttempt,
        status: str,
        next_at: float,
        max_log: int,
    ) -> bool:
        async with self._conn("finish_webhook") as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT log FROM webhook_deliveries WHERE id = %s AND lease = %s AND status = %s "
                "FOR UPDATE",
                (delivery_id, lease, PENDING),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            await conn.execute(
                "UPDATE webhook_deliveries SET log = %s, status = %s, next_at = %s, lease = '' "
                "WHERE id = %s",
                (trimmed_log(row[0], attempt, max_log), status, next_at, delivery_id),
            )
        return True

    async def list_webhook_deliveries(
        self,
        *,
        endpoint_id: str | None = None,
        status: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[WebhookDelivery]:
        where, params = list_conditions("%s", endpoint_id, status, before_id)
        query = f"SELECT {W_COLUMNS} FROM webhook_deliveries{where} ORDER BY id DESC LIMIT %s"  # noqa: S608
        rows = await self._all("list_webhook_deliveries", query, (*params, max(0, limit)))
        return [delivery_from_row(r) for r in rows]

    async def purge_webhooks(self, before: float) -> int:
        query = (
            "DELETE FROM webhook_deliveries WHERE ctid = ANY(ARRAY(SELECT ctid FROM "
            "webhook_deliveries WHERE created_at < %s LIMIT %s))"
        )
        total = 0
        while True:  # one short DELETE per batch
            removed = await self._rowcount("purge_webhooks", query, (before, PURGE_BATCH))
            total += removed
            if removed < PURGE_BATCH:
                return total
