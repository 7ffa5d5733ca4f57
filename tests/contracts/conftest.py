"""The backend table every contract test runs over.

Each store URL below is a ``pytest.param``; a backend is done when
``test_store_contract.py`` passes for it unchanged.

Backends on a server get one of this run's own (``tests/backends.py``): Redis a
private redis-server, PostgreSQL a database named after the run, Redis Cluster the
session's cluster. The fixture wipes it before every test with the scheme's hook in
``RESET_HOOKS``. When such a backend's module is missing or its server is
unreachable, its tests are skipped with a reason naming the URL; set
``REQUIRE_TEST_BACKENDS=1`` (CI) to make that a failure instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from otpguard.errors import ConfigError, StorageError
from otpguard.stores import Store, store_from_url

from ..backends import BackendUnavailable, create_database, is_private
from ..needs import unavailable

SQLITE_FILE = "sqlite-file"  # placeholder: a fresh file under tmp_path per test
REDIS = "redis://127.0.0.1:<port>/0"  # placeholder: the run's private redis-server
REDIS_CLUSTER = "redis+cluster://127.0.0.1:<port>"  # placeholder: the session's cluster
POSTGRES = "postgresql://postgres@127.0.0.1:5432/ogt_<run>_contract"  # placeholder

#: Stores that several processes can open at once (used by the cross-process races).
SHARED_STORE_URLS = [
    pytest.param(SQLITE_FILE, id="sqlite-file"),
    pytest.param(REDIS, marks=pytest.mark.redis, id="redis"),
    pytest.param(REDIS_CLUSTER, marks=pytest.mark.redis_cluster, id="redis-cluster"),
    pytest.param(POSTGRES, marks=pytest.mark.postgres, id="postgres"),
]
STORE_URLS = [pytest.param("sqlite://:memory:", id="sqlite-memory"), *SHARED_STORE_URLS]


async def _flush_redis(url: str) -> None:
    import redis.asyncio as aioredis  # lazily: only when the backend is tested

    if not is_private(url):  # never wipe a server this run did not start
        pytest.fail(f"refusing to FLUSHDB {url}: not this run's redis-server", pytrace=False)
    client = aioredis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def _flush_redis_cluster(url: str) -> None:
    from ..redis_cluster import flush_cluster  # FLUSHALL on every primary of our cluster

    await flush_cluster(url)


async def _truncate_postgres(url: str) -> None:
    import psycopg  # lazily: only when the backend is tested

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'"
        )
        tables = [str(row[0]) for row in await cur.fetchall()]
        await conn.execute(f"TRUNCATE {', '.join(tables)}")


#: scheme -> coroutine wiping the run's own database (called after ``open()``, so
#: it must leave the schema usable). Every non-SQLite backend needs one.
RESET_HOOKS: dict[str, Callable[[str], Awaitable[None]]] = {
    "redis": _flush_redis,
    "redis+cluster": _flush_redis_cluster,
    "postgresql": _truncate_postgres,
    "postgres": _truncate_postgres,
}


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-node Redis Cluster on loopback ports, started once for the session."""
    from ..redis_cluster import ClusterUnavailable, RedisClusterProcess

    cluster = RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        unavailable(f"cannot start a Redis Cluster for {REDIS_CLUSTER}: {exc}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def contract_postgres_url() -> str:
    """This run's contract database (dropped at the end of the session)."""
    try:
        return create_database("contract")
    except BackendUnavailable as exc:
        unavailable(f"store server for {POSTGRES} is unreachable: {exc}")


@pytest.fixture(params=STORE_URLS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url: str = request.param
    if url == REDIS_CLUSTER:
        return str(request.getfixturevalue("redis_cluster_url"))
    if url == REDIS:
        return str(request.getfixturevalue("redis_url"))
    if url == POSTGRES:
        return str(request.getfixturevalue("contract_postgres_url"))
    return f"sqlite:///{tmp_path / 'otpguard.db'}" if url == SQLITE_FILE else url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    scheme = store_url.split(":", 1)[0]
    local = scheme == "sqlite"  # a local backend never skips: any error is a failure
    try:
        s = store_from_url(store_url)
    except ConfigError as exc:
        if local:
            raise
        unavailable(f"store backend for {store_url} is not available: {exc}")
    try:
        await s.open()
        await s.health()
    except StorageError as exc:
        await s.aclose()
        if local:
            raise
        unavailable(f"store server at {store_url} is unreachable: {exc}")
    try:
        if not local:
            hook = RESET_HOOKS.get(scheme)
            if hook is None:
                pytest.fail(
                    f"no reset hook for {scheme}:// in tests/contracts/conftest.py RESET_HOOKS; "
                    "add one so that tests do not see each other's data",
                    pytrace=False,
                )
            await hook(store_url)
        yield s
    finally:
        await s.aclose()
