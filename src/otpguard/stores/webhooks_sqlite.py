"""The webhook outbox on SQLite (mixed into ``SQLiteStore``).

Each operation is one ``BEGIN IMMEDIATE`` transaction run inline like the store's
other operations: the claim's ``UPDATE ... RETURNING`` over the due rows holds the
write lock, so two processes on one file never claim one row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .sqlite_txn import transaction
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

T = TypeVar("T")
PURGE_BATCH = 1_000

#: The ``webhooks`` migration (SQLite's fifth step).
MIGRATION: tuple[str, ...] = (
    """CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        scope TEXT NOT NULL UNIQUE,
        url TEXT NOT NULL,
        key_id TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        next_at REAL NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        lease TEXT NOT NULL,
        log TEXT NOT NULL
    )""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at)",
    "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status)",
    "CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at)",
)


class SQLiteWebhooks(WebhookStore):
    async def _run(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # SQLiteStore's

    async def _run_in_thread(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # SQLiteStore's

    async def put_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        row = (endpoint.id, endpoint.scope, endpoint.url, endpoint.key_id, endpoint.created_at)

        def run(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM webhook_endpoints WHERE scope = ?", (endpoint.scope,))
                conn.execute(
                    f"INSERT INTO webhook_endpoints ({EP_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
                    row,
                )

        await self._run("put_webhook_endpoint", run)

    async def delete_webhook_endpoint(self, scope: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM webhook_endpoints WHERE scope = ?", (scope,))
            return cur.rowcount == 1

        return await self._run("delete_webhook_endpoint", run)

    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]:
        def run(conn: sqlite3.Connection) -> list[WebhookEndpoint]:
            rows = conn.execute(f"SELECT {EP_COLUMNS} FROM webhook_endpoints ORDER BY scope")  # noqa: S608
            return [endpoint_from_row(r) for r in rows]

        return await self._run("list_webhook_endpoints", run)

    async def enqueue_webhooks(
        self, deliveries: Sequence[WebhookDelivery], max_pending: int
    ) -> int:
        rows = [delivery_row(d) for d in deliveries]
        if not rows:
            return 0

        def run(conn: sqlite3.Connection) -> int:
            added = 0
            with transaction(conn):
                for row in rows:
                    cur = conn.execute(
                        f"INSERT INTO webhook_deliveries ({W_COLUMNS}) "  # noqa: S608 - constant
                        "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM "
                        "webhook_deliveries WHERE endpoint_id = ? AND status = ?) < ? "
                        "ON CONFLICT (id) DO NOTHING",
                        (*row, row[1], PENDING, max_pending),
                    )
                    added += cur.rowcount
            return added

        return await self._run("enqueue_webhooks", run)

    async def claim_webhooks(
        self, now: float, limit: int, lease: str, lease_until: float
    ) -> list[WebhookDelivery]:
        def run(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            with transaction(conn):
                rows = conn.execute(
                    "UPDATE webhook_deliveries SET lease = ?, next_at = ?, attempts = attempts + 1 "  # noqa: S608
                    "WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = ? "
                    "AND next_at <= ? ORDER BY next_at LIMIT ?) "
                    f"RETURNING {W_COLUMNS}",
                    (lease, lease_until, PENDING, now, limit),
                ).fetchall()
            return sorted((delivery_from_row(r) for r in rows), key=lambda d: d.id)

        return await self._run("claim_webhooks", run)

    async def finish_webhook(
        self,
        delivery_id: str,
        lease: str,
        attempt: WebhookAttempt,
        status: str,
        next_at: float,
        max_log: int,
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                row = conn.execute(
                    "SELECT log FROM webhook_deliveries WHERE id = ? AND lease = ? AND status = ?",
                    (delivery_id, lease, PENDING),
                ).fetchone()
                if row is None:
                    return False
                conn.execute(
                    "UPDATE webhook_deliveries SET log = ?, status = ?, next_at = ?, lease = '' "
                    "WHERE id = ?",
                    (trimmed_log(row[0], attempt, max_log), status, next_at, delivery_id),
                )
            return True

        return await self._run("finish_webhook", run)

    async def list_webhook_deliveries(
        self,
        *,
        endpoint_id: str | None = None,
        status: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[WebhookDelivery]:
        where, params = list_conditions("?", endpoint_id, status, before_id)
        sql = f"SELECT {W_COLUMNS} FROM webhook_deliveries{where} ORDER BY id DESC LIMIT ?"  # noqa: S608

        def run(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            return [delivery_from_row(r) for r in conn.execute(sql, (*params, max(0, limit)))]

        return await self._run("list_webhook_deliveries", run)

    async def purge_webhooks(self, before: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM webhook_deliveries WHERE rowid IN (SELECT rowid FROM "
                "webhook_deliveries WHERE created_at < ? LIMIT ?)",
                (before, PURGE_BATCH),
            )
            return cur.rowcount

        total = 0
        while True:  # one short write per batch: a big purge never holds the lock for long
            removed = await self._run_in_thread("purge_webhooks", run)
            total += removed
            if removed < PURGE_BATCH:
                return total
