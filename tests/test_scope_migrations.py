"""Upgrading a SQL database of the previous release: its verifications gain the
``service`` column (SQLite schema 8 -> 9, PostgreSQL 12 -> 13), every row of before
reads as made without one, and new rows keep theirs."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from otpguard.models import Channel, Status, Verification
from otpguard.stores.sql import V_COLUMNS, verification_values
from otpguard.stores.sql_store import SQLStore
from otpguard.stores.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from otpguard.stores.sqlite import SQLiteStore

from .test_rate_log import postgres_url

T0 = 1_800_000_000.0
NUMBER = "+447400123456"
SID = "VA" + "2" * 32
#: The columns of the previous release's rows.
OLD_COLUMNS = V_COLUMNS.removesuffix(", service")


def verification(**changes: Any) -> Verification:
    v = Verification(
        id="VE" + uuid.uuid4().hex, to=NUMBER, channel=Channel.SMS, status=Status.PENDING,
        key_id="k1", code_hash="tag-" + uuid.uuid4().hex, created_at=T0, updated_at=T0,
        expires_at=T0 + 600, resend_available_at=T0 + 30, owner="key-a",
    )  # fmt: skip
    return v.with_(**changes)


def old_row(v: Verification) -> tuple[Any, ...]:
    """``v`` as the previous release inserted it (no service column)."""
    return verification_values(v)[:-1]


async def assert_upgraded(store: SQLStore, old: Verification) -> None:
    assert await store.get_verification(old.id) == old
    new = verification(service=SID, created_at=T0 + 1)
    await store.create_verification(new)
    assert await store.get_verification(new.id) == new
    listed = await store.list_pending(NUMBER, T0 + 2, owner="key-a", limit=5)
    assert [(v.id, v.service) for v in listed] == [(new.id, SID), (old.id, None)]


async def test_sqlite_schema_8_rows_read_without_a_service(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for step in SQLITE_MIGRATIONS[:8]:
        for sql in step:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 8")
    old = verification()
    marks = ", ".join("?" * len(old_row(old)))
    conn.execute(f"INSERT INTO verifications ({OLD_COLUMNS}) VALUES ({marks})", old_row(old))  # noqa: S608 - constant
    conn.commit()
    conn.close()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        await assert_upgraded(store, old)
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_schema_12_rows_read_without_a_service() -> None:
    import psycopg

    from otpguard.stores.postgres import MIGRATIONS, PostgresStore

    url = postgres_url("scopemig")
    old = verification()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for n, step in enumerate(MIGRATIONS[:12], start=1):
            for sql in step:
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (n,))
        marks = ", ".join(["%s"] * len(old_row(old)))
        await conn.execute(
            f"INSERT INTO verifications ({OLD_COLUMNS}) VALUES ({marks})",  # noqa: S608 - constant
            old_row(old),
        )
    store = PostgresStore(url)
    await store.open()
    try:
        await assert_upgraded(store, old)
    finally:
        await store.aclose()
