"""SQLite-only behaviour (the shared behaviour is in tests/contracts/)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from otpguard.errors import ConfigError
from otpguard.models import Status
from otpguard.service import Verifier
from otpguard.stores.sqlite import MIGRATIONS, PAGE_SIZE, SQLiteStore
from otpguard.transports.memory import MemoryTransport


@pytest.mark.parametrize(
    ("query", "mode"), [("", 1), ("?synchronous=full", 2), ("?synchronous=normal", 1)]
)
async def test_synchronous_mode_from_url(tmp_path: Path, query: str, mode: int) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}{query}")
    await store.open()
    try:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == mode
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.aclose()


async def test_a_new_file_gets_small_pages_and_an_old_file_keeps_its_own(
    tmp_path: Path,
) -> None:
    """A new database is made with ``PAGE_SIZE``; a file made earlier with SQLite's
    default keeps 4,096 (changing it needs a VACUUM), and its store works as usual."""
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    sizes = {}
    for path in (tmp_path / "new.db", old):
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            await store.set_flag("k", "v", 2e9)
            assert await store.get_flag("k", 1.0) == "v"
            assert store._conn is not None
            sizes[path.name] = store._conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            await store.aclose()
    assert PAGE_SIZE != 4096
    assert sizes == {"new.db": PAGE_SIZE, "old.db": 4096}


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db?synchronous=off", "sqlite:///x.db?cache=big", "sqlite://x.db"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLiteStore(url)


async def test_a_locked_database_is_waited_for_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """Another process holds the write lock: the operation waits asynchronously (the
    loop keeps serving), then completes once the lock is released."""
    import asyncio
    import sqlite3

    from otpguard.models import RateRule

    path = tmp_path / "locked.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # what a second worker process mid-write holds
        hit = asyncio.create_task(store.hit([RateRule("r", "k", 5, 60)], 1_800_000_000.0))
        ticks = 0
        for _ in range(50):
            await asyncio.sleep(0)
            ticks += 1
        assert not hit.done()  # still waiting for the lock...
        assert ticks == 50  # ...and the loop kept running meanwhile
        other.execute("ROLLBACK")
        decision = await asyncio.wait_for(hit, timeout=10)
        assert decision.allowed
        assert await store.count("k", 60, 1_800_000_000.0) == 1
    finally:
        other.close()
        await store.aclose()


async def test_rows_from_before_purposes_read_as_login_codes(tmp_path: Path) -> None:
    """A database at schema 4 (the release before purposes) with a verification in it:
    the "purpose" step adds the columns, and the old row is a login code."""
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for step in MIGRATIONS[:4]:
        for sql in step:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 4")
    conn.execute(
        "INSERT INTO verifications (id, to_number, channel, status, key_id, code_hash, "
        "created_at, updated_at, expires_at, resend_available_at, attempts, sends) "
        "VALUES ('VEold', '+447400123456', 'sms', 'pending', 'k', 't', 1, 1, 301, 31, 0, 1)"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        v = await store.get_verification("VEold")
        assert v is not None and v.code_hash == "t"
        assert (v.purpose, v.amount, v.currency, v.payee) == ("login", None, None, None)
        assert store._conn is not None
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        await store.aclose()


async def test_a_closed_store_names_the_operation(tmp_path: Path) -> None:
    """Error translation is the contract's (Store.__init_subclass__): the message names
    the operation, the reason is the store's."""
    from otpguard.errors import StorageError

    store = SQLiteStore(f"sqlite:///{tmp_path / 'closed.db'}")
    with pytest.raises(StorageError) as caught:
        await store.get_verification("VE1")
    assert str(caught.value) == "sqlite store: get_verification failed (store is not open)"
    await store.open()
    await store.aclose()
    with pytest.raises(StorageError, match=r"^sqlite store: purge failed \(store is not open\)$"):
        await store.purge(1.0, 1, 1, 1)


async def test_a_check_by_id_is_one_write_transaction(
    verifier_factory: Callable[..., contextlib.AbstractAsyncContextManager[Verifier]],
    outbox: MemoryTransport,
    tmp_path: Path,
) -> None:
    """Right, wrong and the last wrong code (which locks): each check by id is one
    ``BEGIN IMMEDIATE``, one commit (``SQLiteStore.check_by_id``); the contract's
    default would take two or three."""
    async with verifier_factory(store=f"sqlite:///{tmp_path / 'otp.db'}", max_attempts=2) as otp:
        store = otp.store
        assert isinstance(store, SQLiteStore) and store._conn is not None
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)

        async def begins(code: str, vid: str) -> tuple[int, bool]:
            statements.clear()
            result = await otp.check(code, verification_id=vid, client_ip="192.0.2.7")
            return sum(s.startswith("BEGIN") for s in statements), result.valid

        right = await otp.start("+447400123001", client_ip="192.0.2.7")
        assert await begins(outbox.last_code(), right.id) == (1, True)
        wrong = await otp.start("+447400123002", client_ip="192.0.2.7")
        code = outbox.last_code()
        other = next(c for c in ("111357", "246824") if c != code)
        assert await begins(other, wrong.id) == (1, False)
        assert await begins(other, wrong.id) == (1, False)  # the last attempt: it locks
        locked = await store.get_verification(wrong.id)
        assert locked is not None and locked.status is Status.MAX_ATTEMPTS_REACHED
        assert sum(s.startswith("COMMIT") for s in statements) == 1
        store._conn.set_trace_callback(None)
