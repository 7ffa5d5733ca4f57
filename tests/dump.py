"""Every stored byte of a store as text, for the tests that prove no code or number is
stored: each table of a SQLite or PostgreSQL store read over the test's own connection
(an in-memory SQLite database exists in the store's one connection only, so that one is
read there). Other stores answer with their own ``dump()``."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from otpguard.stores import Store


def _lines(tables: list[tuple[str, list[str], list[tuple[Any, ...]]]]) -> str:
    out: list[str] = []
    for table, names, rows in tables:
        out.append(f"== {table}: " + "\t".join(names))
        out.extend(
            "\t".join(json.dumps(v) if isinstance(v, dict | list) else str(v) for v in row)
            for row in rows
        )
    return "\n".join(out) + "\n"


def _sqlite_tables(conn: sqlite3.Connection) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    out = []
    for (table,) in names:
        cur = conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the schema
        out.append((table, [d[0] for d in cur.description], cur.fetchall()))
    return out


async def _postgres_tables(url: str) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    import psycopg
    from psycopg import sql

    from otpguard.stores.postgres import _split_url

    out = []
    async with await psycopg.AsyncConnection.connect(_split_url(url)[0]) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' "
            "ORDER BY table_name"
        )
        for (table,) in await cur.fetchall():
            cur = await conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
            names = [d.name for d in cur.description or ()]
            out.append((str(table), names, await cur.fetchall()))
    return out


async def dump_store(store: Store) -> str:
    from otpguard.stores.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        if store.path == ":memory:":
            assert store._conn is not None, "open the store first"
            return _lines(_sqlite_tables(store._conn))
        conn = sqlite3.connect(store.path)
        try:
            return _lines(_sqlite_tables(conn))
        finally:
            conn.close()
    if type(store).__name__ == "PostgresStore":
        return _lines(await _postgres_tables(store.url))
    return await store.dump()
