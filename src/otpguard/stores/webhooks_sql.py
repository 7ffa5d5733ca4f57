"""The webhook outbox in the SQL stores (mixed into ``SQLStore``).

A claim is one ``UPDATE ... WHERE id IN (SELECT ...) RETURNING``: atomic by itself in
SQLite, and in PostgreSQL its ``FOR UPDATE SKIP LOCKED`` makes concurrent claims from
any number of instances skip each other's rows instead of waiting, so no row is in two
claims. Finishing checks the lease token and writes in one write transaction. An
enqueue decides the per-endpoint cap with the insert: SQLite's write transaction holds
the database; PostgreSQL takes a per-endpoint advisory lock first (under READ COMMITTED
two writers would each count the other's rows short).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .sql import WRITE, Cursor, SQLDialect, marks
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

_ENQUEUE = (
    f"INSERT INTO webhook_deliveries ({W_COLUMNS}) "  # noqa: S608 - constant
    f"SELECT {marks(10)} WHERE (SELECT COUNT(*) FROM "
    "webhook_deliveries WHERE endpoint_id = ? AND status = ?) < ? "
    "ON CONFLICT (id) DO NOTHING"
)


def lock_key(endpoint_id: str) -> int:
    """The transaction's advisory lock for one endpoint's pending rows (64 bits)."""
    digest = hashlib.sha256(b"otpguard-webhook-cap:" + endpoint_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SQLWebhooks(SQLDialect, WebhookStore):
    async def put_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        row = (endpoint.id, endpoint.scope, endpoint.url, endpoint.key_id, endpoint.created_at)

        async def run(cur: Cursor) -> None:
            await cur.run("DELETE FROM webhook_endpoints WHERE scope = ?", (endpoint.scope,))
            await cur.run(f"INSERT INTO webhook_endpoints ({EP_COLUMNS}) VALUES ({marks(5)})", row)  # noqa: S608 - constant names; values are bound

        await self._run(run, WRITE)

    async def delete_webhook_endpoint(self, scope: str) -> bool:
        sql = "DELETE FROM webhook_endpoints WHERE scope = ?"
        return await self._run(lambda cur: cur.run(sql, (scope,))) == 1

    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]:
        sql = f"SELECT {EP_COLUMNS} FROM webhook_endpoints ORDER BY scope"  # noqa: S608 - constant names; values are bound
        return [endpoint_from_row(r) for r in await self._run(lambda cur: cur.all(sql))]

    async def enqueue_webhooks(
        self, deliveries: Sequence[WebhookDelivery], max_pending: int
    ) -> int:
        if not deliveries:
            return 0

        async def run(cur: Cursor) -> int:
            # One lock order: the endpoints sorted.
            await self._lock(
                cur, [lock_key(e) for e in sorted({d.endpoint_id for d in deliveries})]
            )
            added = 0
            for d in deliveries:
                added += await cur.run(
                    _ENQUEUE, (*delivery_row(d), d.endpoint_id, PENDING, max_pending)
                )
            return added

        return await self._run(run, WRITE)

    async def claim_webhooks(
        self, now: float, limit: int, lease: str, lease_until: float
    ) -> list[WebhookDelivery]:
        sql = (
            "UPDATE webhook_deliveries SET lease = ?, next_at = ?, attempts = attempts + 1 "  # noqa: S608 - constant names; values are bound
            "WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = ? AND next_at <= ? "
            f"ORDER BY next_at LIMIT ?{self.skip_locked}) RETURNING {W_COLUMNS}"
        )
        params = (lease, lease_until, PENDING, now, limit)
        rows = await self._run(lambda cur: cur.all(sql, params))
        return sorted((delivery_from_row(r) for r in rows), key=lambda d: d.id)

    async def finish_webhook(
        self, delivery_id: str, lease: str, attempt: WebhookAttempt, status: str,
        next_at: float, max_log: int,
    ) -> bool:  # fmt: skip
        async def run(cur: Cursor) -> bool:
            row = await cur.one(
                "SELECT log FROM webhook_deliveries WHERE id = ? AND lease = ? AND status = ?"  # noqa: S608 - constant names; values are bound
                + self.for_update,
                (delivery_id, lease, PENDING),
            )
            if row is None:
                return False
            await cur.run(
                "UPDATE webhook_deliveries SET log = ?, status = ?, next_at = ?, lease = '' "
                "WHERE id = ?",
                (trimmed_log(row[0], attempt, max_log), status, next_at, delivery_id),
            )
            return True

        return await self._run(run, WRITE)

    async def list_webhook_deliveries(
        self, *, endpoint_id: str | None = None, status: str | None = None,
        before_id: str | None = None, limit: int = 100,
    ) -> list[WebhookDelivery]:  # fmt: skip
        where, params = list_conditions("?", endpoint_id, status, before_id)
        sql = f"SELECT {W_COLUMNS} FROM webhook_deliveries{where} ORDER BY id DESC LIMIT ?"  # noqa: S608 - constant names; values are bound
        rows = await self._run(lambda cur: cur.all(sql, (*params, max(0, limit))))
        return [delivery_from_row(r) for r in rows]

    async def purge_webhooks(self, before: float) -> int:
        return await self._purge_table("webhook_deliveries", "created_at < ?", before)

    async def _purge_table(self, table: str, condition: str, bound: float) -> int:
        raise NotImplementedError  # SQLStore's
