"""The shells' records on every backend: the service records (``Store.put_service``,
``get_service``, ``list_services``, ``delete_service``: the /v2 services), an
account's listed in the order first kept, at most ``cap`` a new one, the cap held
across processes; the dashboard's sign-outs (``sign_out``, ``signed_out``), purged
after their time; and the upgrade from the release that kept both as flags, every
live one kept (``test_flags_of_before_are_kept_on_upgrade``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from otpguard.stores import Store, store_from_url
from otpguard.stores.records import (
    SERVICE_FLAG_FOREVER,
    SERVICE_FLAG_PREFIX,
    SIGN_OUT_FLAG_PREFIX,
    ServiceRecord,
)

from .conftest import RESET_HOOKS, SHARED_STORE_URLS
from .test_store_contract import T0, race_in_processes

ACCOUNT, OTHER = "AC" + "a" * 32, "AC" + "b" * 32


def record(n: int, account: str = ACCOUNT, created_at: float = T0) -> ServiceRecord:
    sid = f"VA{n:032x}"
    doc = {"sid": sid, "account_sid": account, "friendly_name": f"Shop {n}",
           "code_length": 6, "created_at": created_at, "updated_at": created_at}  # fmt: skip
    return ServiceRecord(sid, account, json.dumps(doc, sort_keys=True), created_at)


async def test_put_get_list_delete(store: Store) -> None:
    a, b, c = record(1), record(2, created_at=T0 - 5), record(3, OTHER)
    for r in (a, b, c):
        assert await store.put_service(r, 10)
    assert await store.get_service(a.id) == a
    assert await store.get_service(record(9).id) is None
    # In the order first kept (not by created_at), each account its own.
    assert await store.list_services(ACCOUNT) == [a, b]
    assert await store.list_services(OTHER) == [c]
    assert await store.list_services("AC" + "c" * 32) == []
    changed = ServiceRecord(a.id, a.account, '{"renamed":true}', a.created_at)
    assert await store.put_service(changed, 10)  # a replace keeps its place
    assert await store.list_services(ACCOUNT) == [changed, b]
    assert await store.delete_service(a.id)
    assert not await store.delete_service(a.id)
    assert await store.get_service(a.id) is None
    assert await store.list_services(ACCOUNT) == [b]
    assert await store.put_service(a, 10)  # made again: last
    assert await store.list_services(ACCOUNT) == [b, a]


async def test_a_delete_takes_the_record_out_of_its_own_accounts_list(store: Store) -> None:
    """Whatever the account's name (Redis's delete finds the list by the record's JSON)."""
    odd = 'AC "\\é:{x}'  # a quote, a backslash, non-ASCII, braces: escaped in the JSON
    mine, kept, theirs = record(1, odd), record(2, odd), record(3)
    for r in (mine, kept, theirs):
        assert await store.put_service(r, 10)
    assert await store.delete_service(mine.id)
    assert await store.list_services(odd) == [kept]
    assert await store.list_services(ACCOUNT) == [theirs]
    assert await store.put_service(mine, 2)  # the cap counts what is left: one
    assert not await store.put_service(record(4, odd), 2)


async def test_a_new_record_only_under_the_cap_of_its_account(store: Store) -> None:
    first, second = record(1), record(2)
    assert await store.put_service(first, 2) and await store.put_service(second, 2)
    assert not await store.put_service(record(3), 2)
    assert await store.get_service(record(3).id) is None
    assert await store.put_service(ServiceRecord(first.id, ACCOUNT, "{}", T0), 2)  # a change
    assert await store.put_service(record(4, OTHER), 2)  # another account's own cap
    assert await store.delete_service(second.id)
    assert await store.put_service(record(3), 2)
    assert [r.id for r in await store.list_services(ACCOUNT)] == [first.id, record(3).id]


async def test_sign_outs_last_until_their_time(store: Store) -> None:
    assert not await store.signed_out("n1", T0)
    await store.sign_out("n1", T0 + 100)
    assert await store.signed_out("n1", T0 + 99)
    assert not await store.signed_out("n1", T0 + 100)  # the session expired by then
    assert not await store.signed_out("n2", T0)
    await store.sign_out("n1", T0 + 200)  # signed out again: the later time
    assert await store.signed_out("n1", T0 + 150)
    await store.sign_out("n2", T0 + 10)
    await store.purge(T0 + 50, verification_grace=0, rate_horizon=0, event_horizon=0)
    assert await store.signed_out("n1", T0 + 150) and not await store.signed_out("n2", T0)


async def _race(url: str, start: int, calls: int, barrier: Any) -> list[Any]:
    store = store_from_url(url)
    await store.open()
    try:
        barrier.wait(timeout=60)
        puts = (store.put_service(record(start + i), 5) for i in range(calls))
        return list(await asyncio.gather(*puts))
    finally:
        await store.aclose()


def _put_worker(url: str, op: str, arg: Any, calls: int, barrier: Any, results: Any) -> None:
    try:  # race_in_processes' worker: ``calls`` new records, ids from ``os.getpid()``
        import os

        results.put(asyncio.run(_race(url, os.getpid() * 100, calls, barrier)))
    except BaseException as exc:
        results.put(f"worker failed: {exc!r}")
        raise


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_puts_across_processes_keep_exactly_the_cap(store: Store, store_url: str) -> None:
    outcomes = race_in_processes(store_url, "put", None, processes=4, calls=4, worker=_put_worker)
    assert outcomes.count(True) == 5 and len(outcomes) == 16
    assert len(await store.list_services(ACCOUNT)) == 5


# -- the upgrade ------------------------------------------------------------------------

LIVE = [record(1, created_at=T0 + 10), record(2), record(4, OTHER)]
DELETED = record(3)


def flags() -> list[tuple[str, str, float]]:
    """What the release of before kept: each service a flag, a deleted one given its
    deletion time, and each account's index (not read any more)."""
    out = [(SERVICE_FLAG_PREFIX + r.id, r.document, SERVICE_FLAG_FOREVER) for r in LIVE]
    out.append((SERVICE_FLAG_PREFIX + DELETED.id, DELETED.document, T0 + 5))
    index = json.dumps([LIVE[0].id, LIVE[1].id, DELETED.id])
    out.append(("verify_compat:services_of:" + ACCOUNT, index, SERVICE_FLAG_FOREVER))
    out.append((SIGN_OUT_FLAG_PREFIX + "nonce-1", "1", T0 + 3600))
    return out


async def _old_sqlite(path: Path) -> str:
    import sqlite3

    from otpguard.stores.sqlite import MIGRATIONS

    conn = sqlite3.connect(path)
    for step in MIGRATIONS[:8]:  # the release of before
        for sql in step:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 8")
    conn.executemany("INSERT INTO flags (key, value, until) VALUES (?, ?, ?)", flags())
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


async def _old_postgres() -> str:
    import psycopg

    from otpguard.stores.postgres import MIGRATIONS

    from ..test_rate_log import postgres_url

    url = postgres_url("svcmig")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for n, step in enumerate(MIGRATIONS[:12], start=1):  # the release of before
            for sql in step:
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (n,))
        for row in flags():
            await conn.execute("INSERT INTO flags (key, value, until) VALUES (%s, %s, %s)", row)
    return url


async def _old_redis(url: str) -> str:
    """A database the release of before wrote: its flags, nothing copied yet."""
    await RESET_HOOKS[url.split(":", 1)[0]](url)
    writer = store_from_url(url)
    await writer.open()
    try:
        for key, value, until in flags():
            await writer.set_flag(key, value, until)
    finally:
        await writer.aclose()
    return url


async def test_flags_of_before_are_kept_on_upgrade(store_url: str, tmp_path: Path) -> None:
    scheme = store_url.split(":", 1)[0]
    if scheme == "sqlite":
        url = await _old_sqlite(tmp_path / "old.db")
    elif scheme.startswith("postgres"):
        url = await _old_postgres()
    else:
        url = await _old_redis(store_url)
    store = store_from_url(url)
    await store.open()
    try:
        for r in LIVE:
            assert await store.get_service(r.id) == r
        assert await store.get_service(DELETED.id) is None
        assert await store.list_services(ACCOUNT) == [LIVE[1], LIVE[0]]  # created first
        assert await store.list_services(OTHER) == [LIVE[2]]
        assert not await store.put_service(record(5), 2)  # the copies count
        assert await store.put_service(record(5), 3)
        assert (await store.list_services(ACCOUNT))[-1] == record(5)
        assert await store.signed_out("nonce-1", T0 + 3599)
        assert not await store.signed_out("nonce-1", T0 + 3600)
        assert not await store.signed_out("nonce-2", T0)
    finally:
        await store.aclose()
    again = store_from_url(url)  # another process copies nothing again
    await again.open()
    try:
        assert await again.delete_service(LIVE[0].id)
        await again.aclose()
        await again.open()
        assert await again.get_service(LIVE[0].id) is None
    finally:
        await again.aclose()
