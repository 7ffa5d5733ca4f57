"""Every stored byte of a store as text, for the tests that prove no code or number is
stored, read over the test's own connection: each table of a SQLite or PostgreSQL store
(an in-memory SQLite database exists in the store's one connection only, so that one is
read there), and every key of a Redis store's prefix (SCAN, on every primary in
Cluster), each dumped by its type. A store of another kind is a failure: teach this
module to read it (ARCHITECTURE.md, "How to add a store")."""

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


async def _redis_keys(url: str) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """Each key of the store's prefix as a "table": its type, then its entries."""
    from otpguard.stores.redis_base import RedisBase, escape_glob

    own = RedisBase(url)  # the store's URL (prefix, Cluster) on a client of our own
    await own.open()
    try:
        client = own._live
        pattern = f"{escape_glob(own._opts.prefix)}:*"
        out: list[tuple[str, list[str], list[tuple[Any, ...]]]] = []
        for key in sorted({k async for k in own._scan(pattern)}):
            kind = await client.type(key)
            rows: list[tuple[Any, ...]]
            if kind == "hash":
                rows = sorted((await client.hgetall(key)).items())
            elif kind == "zset":
                rows = [(m, repr(s)) for m, s in await client.zrange(key, 0, -1, withscores=True)]
            elif kind == "string":
                rows = [(await client.get(key),)]
            elif kind == "set":
                rows = [(m,) for m in sorted(await client.smembers(key))]
            elif kind == "list":
                rows = [(m,) for m in await client.lrange(key, 0, -1)]
            elif kind == "none":  # expired or deleted since the SCAN
                continue
            else:
                raise AssertionError(f"tests/dump.py cannot read a Redis {kind} ({key})")
            out.append((key, [kind], rows))
        return out
    finally:
        await own.aclose()


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
    if type(store).__name__ == "RedisStore":
        return _lines(await _redis_keys(store.url))
    raise AssertionError(f"tests/dump.py cannot read a {type(store).__name__}")
