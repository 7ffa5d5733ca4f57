"""PostgreSQL-specific behaviour beyond the contract suite: the URL's pool
parameters, migrations under concurrency, batched purges, errors without values,
and recovery after an outage (through a TCP proxy the test cuts)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from otpguard.errors import ConfigError, StorageError
from otpguard.models import Channel, RateRule, Status, Verification

from .backends import BackendUnavailable, create_database, database_name
from .needs import unavailable
from .test_multi_instance import TcpProxy

pytestmark = pytest.mark.postgres

T0 = 1_800_000_000.0


def make_v(**changes: Any) -> Verification:
    v = Verification(
        id="VE" + uuid.uuid4().hex,
        to="+447400123456",
        channel=Channel.SMS,
        status=Status.PENDING,
        key_id="k1",
        code_hash="tag-" + uuid.uuid4().hex,
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + 600,
        resend_available_at=T0 + 30,
    )
    return v.with_(**changes)


@pytest.fixture
def fresh_db() -> str:
    """An empty database of this run's (``tests/backends.py``); skipped (with the
    reason) when PostgreSQL is missing."""
    try:
        from otpguard.stores import postgres  # noqa: F401
    except ImportError as exc:
        unavailable(f"the postgres extra is not installed: {exc}")
    try:
        return create_database("pgtest", "pool_timeout=2&pool_max_size=4")
    except BackendUnavailable as exc:
        unavailable(str(exc))


async def versions(url: str) -> list[int]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url.split("?")[0]) as conn:
        cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        return [row[0] for row in await cur.fetchall()]


def test_url_pool_parameters() -> None:
    from otpguard.stores.postgres import _split_url

    conninfo, options = _split_url(
        "postgres://u:pw@db:5433/otp?sslmode=require&pool_max_size=20&pool_timeout=1.5"
    )
    assert conninfo == "postgresql://u:pw@db:5433/otp?sslmode=require"
    assert options == {"pool_min_size": 2, "pool_max_size": 20, "pool_timeout": 1.5}
    with pytest.raises(ConfigError):
        _split_url("postgresql://db/otp?pool_max_size=many")
    with pytest.raises(ConfigError):
        _split_url("postgresql://db/otp?pool_min_size=5&pool_max_size=2")


def test_repr_hides_the_password() -> None:
    from otpguard.stores.postgres import PostgresStore

    assert "s3cret" not in repr(PostgresStore("postgresql://u:s3cret@db/otp"))


async def test_instances_starting_together_migrate_once(fresh_db: str) -> None:
    from otpguard.stores.postgres import MIGRATIONS, PostgresStore

    stores = [PostgresStore(fresh_db) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        v = make_v()
        await stores[0].create_verification(v)
        assert await stores[5].get_verification(v.id) == v
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))
    assert await versions(fresh_db) == list(range(1, len(MIGRATIONS) + 1))
    again = PostgresStore(fresh_db)  # reopening applies nothing
    await again.open()
    await again.aclose()
    assert await versions(fresh_db) == list(range(1, len(MIGRATIONS) + 1))


async def test_newer_schema_is_refused(fresh_db: str) -> None:
    import psycopg

    from otpguard.stores.postgres import PostgresStore

    store = PostgresStore(fresh_db)
    await store.open()
    await store.aclose()
    async with await psycopg.AsyncConnection.connect(fresh_db.split("?")[0]) as conn:
        await conn.execute("INSERT INTO schema_migrations (version) VALUES (999)")
        await conn.commit()
    with pytest.raises(StorageError, match="newer"):
        await PostgresStore(fresh_db).open()


async def test_errors_carry_no_values(fresh_db: str) -> None:
    from otpguard.stores.postgres import PostgresStore

    store = PostgresStore(fresh_db)
    await store.open()
    try:
        v = make_v()
        await store.create_verification(v)
        with pytest.raises(StorageError) as info:
            await store.create_verification(v)  # duplicate id
        assert v.id not in str(info.value) and v.code_hash not in str(info.value)
        # unique_violation, by SQLSTATE only, in the contract's one shape
        assert str(info.value) == "postgres store: create_verification failed (23505)"
        assert info.value.__cause__ is not None
    finally:
        await store.aclose()


async def test_purge_in_many_batches(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from otpguard.stores import postgres

    monkeypatch.setattr(postgres, "PURGE_BATCH", 100)
    store = postgres.PostgresStore(fresh_db)
    await store.open()
    try:
        for _ in range(250):
            await store.create_verification(make_v())
        await store.hit([RateRule("r", "k", 10_000, 60)], T0, cost=1_050)
        removed = await store.purge(T0 + 10_000, 3600, 3600, 86_400)
        assert removed == 250 + 1_050
        assert await store.count("k", 10**9, T0 + 10_000) == 0
    finally:
        await store.aclose()


async def test_recovers_after_an_outage_without_reopening(fresh_db: str) -> None:
    from otpguard.stores.postgres import PostgresStore

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    store = PostgresStore(proxy.url_for(fresh_db))
    try:
        await store.open()
        v = make_v()
        await store.create_verification(v)
        await proxy.cut()
        with pytest.raises(StorageError):
            await store.get_verification(v.id)
        with pytest.raises(StorageError):
            await store.hit([RateRule("r", "k", 3, 60)], T0)
        await proxy.start()
        for _ in range(100):  # a deadline for recovery, not a timing assertion
            try:
                await store.health()
                break
            except StorageError:
                await asyncio.sleep(0.05)
        assert await store.get_verification(v.id) == v
        assert (await store.hit([RateRule("r", "k", 3, 60)], T0)).allowed
    finally:
        await store.aclose()
        await proxy.cut()
    with pytest.raises(StorageError):  # and a closed store stays closed
        await store.health()


async def test_a_known_outage_fails_fast_and_recovers(fresh_db: str) -> None:
    """Once the store has found the server gone, operations fail at once instead of
    each waiting ``pool_timeout`` for a connection: with pool_timeout=30, every call
    below must end well inside a 10 s deadline (a bound, not a timing measurement).
    A background probe notices the server is back; the same store serves again."""
    from otpguard.stores.postgres import PostgresStore

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    store = PostgresStore(proxy.url_for(fresh_db).replace("pool_timeout=2", "pool_timeout=30"))
    assert store._options["pool_timeout"] == 30
    try:
        await store.open()
        v = make_v()
        await store.create_verification(v)
        await proxy.cut()
        async with asyncio.timeout(10):
            with pytest.raises(StorageError):
                await store.get_verification(v.id)
            for _ in range(3):  # each would have waited 30 s for the emptied pool
                results = await asyncio.gather(
                    store.get_verification(v.id),
                    store.hit([RateRule("r", "k", 3, 60)], T0),
                    store.create_verification(make_v()),
                    store.health(),
                    return_exceptions=True,
                )
                assert all(isinstance(r, StorageError) for r in results), results
        await proxy.start()
        for _ in range(200):  # a deadline for recovery, not a timing assertion
            try:
                await store.health()
                break
            except StorageError:
                await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            assert await store.get_verification(v.id) == v
            assert (await store.hit([RateRule("r", "k", 3, 60)], T0)).allowed
    finally:
        await store.aclose()
        await proxy.cut()


async def test_hit_takes_limits_past_32_bits(fresh_db: str) -> None:
    """Limits and costs are bigint in the server-side functions."""
    from otpguard.stores.postgres import PostgresStore

    store = PostgresStore(fresh_db)
    await store.open()
    try:
        decision = await store.hit([RateRule("huge", "k", 10**12, 3600)], T0, cost=2)
        assert decision.allowed and decision.count == 2
    finally:
        await store.aclose()


@pytest.mark.slow  # waits out the pool's connect attempts
async def test_a_missing_database_is_named_not_hidden_behind_a_pool_timeout(
    fresh_db: str,
) -> None:
    from otpguard.stores.postgres import PostgresStore

    missing = f"otpguard_missing_{uuid.uuid4().hex[:12]}"  # never created
    store = PostgresStore(fresh_db.replace(f"/{database_name('pgtest')}?", f"/{missing}?"))
    with pytest.raises(StorageError) as exc:
        await store.open()
    assert f'database "{missing}" does not exist' in str(exc.value)


async def test_rows_from_before_purposes_read_as_login_codes(fresh_db: str) -> None:
    """A database at schema 5 (the release before purposes) with a verification in it:
    the "purpose" step adds the columns, and the old row is a login code."""
    import psycopg

    from otpguard.stores.postgres import MIGRATIONS, PostgresStore

    async with await psycopg.AsyncConnection.connect(fresh_db.split("?")[0]) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for n, step in enumerate(MIGRATIONS[:5], start=1):
            for sql in step:
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (n,))
        await conn.execute(
            "INSERT INTO verifications (id, to_number, channel, status, key_id, code_hash, "
            "created_at, updated_at, expires_at, resend_available_at, attempts, sends) "
            "VALUES ('VEold', '+447400123456', 'sms', 'pending', 'k', 't', 1, 1, 301, 31, 0, 1)"
        )
        await conn.commit()
    store = PostgresStore(fresh_db)
    await store.open()
    try:
        v = await store.get_verification("VEold")
        assert v is not None and v.code_hash == "t"
        assert (v.purpose, v.amount, v.currency, v.payee) == ("login", None, None, None)
    finally:
        await store.aclose()
    assert await versions(fresh_db) == list(range(1, len(MIGRATIONS) + 1))
