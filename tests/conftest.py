"""Shared fixtures: settings, a manual clock, a memory outbox, a Verifier, an HTTP client,
and this run's own store servers (``tests/backends.py``).

Tests read codes the way a phone would: from the memory transport's outbox.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import Settings, load_settings
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from .backends import BackendUnavailable, RedisServer, drop_databases
from .needs import unavailable

UK_MOBILE = "+447400123456"
TEST_KEY = new_secret_hex()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "store": "sqlite://:memory:",
        "secret_keys": [TEST_KEY],
        "transport": "memory",
        "log_events": True,
        # Failing checks are padded to a time floor in real time; the suite has
        # thousands of them, so the floor is off here (bench/timing.py measures it).
        "failed_check_floor": 0.0,
    }
    base.update(overrides)
    # ``env`` is also load_settings' own parameter (the environment mapping).
    environ = {"OTPGUARD_ENV": base.pop("env")} if "env" in base else {}
    return load_settings(env=environ, **base)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://`` URL of a private redis-server started for this run (never the shared one)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except BackendUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the PostgreSQL databases this run created (``tests/backends.py``), and give
    what ``pytest_collection_finish`` froze back to the collector for pytest's last pass."""
    gc.unfreeze()
    left = drop_databases()
    if left:
        print(f"\ncould not drop this run's PostgreSQL databases: {', '.join(left)}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def outbox() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        return make_settings(tmp_path, **overrides)

    return factory


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
async def verifier(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport
) -> AsyncIterator[Verifier]:
    v = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
    async with v:
        yield v


class ApiClient:
    """An httpx client on the ASGI app, with a key, and the app's Verifier at hand."""

    def __init__(self, http: httpx.AsyncClient, verifier: Verifier, key: str) -> None:
        self.http = http
        self.verifier = verifier
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}
        self.responses: list[httpx.Response] = []

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        r = await self.http.request(method, url, headers=headers, **kw)
        self.responses.append(r)
        return r

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", url, **kw)

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", url, **kw)


@pytest.fixture
def verifier_factory(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> Callable[..., contextlib.AbstractAsyncContextManager[Verifier]]:
    """``async with verifier_factory(**settings) as otp``: a Verifier with other settings, on the
    test's clock and outbox."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Verifier]:
        settings = settings_factory(**overrides)
        async with Verifier(
            settings, store_from_url(settings.store_url), outbox, clock=clock
        ) as otp:
            yield otp

    return factory


@contextlib.asynccontextmanager
async def open_api(
    settings: Settings,
    clock: ManualClock,
    outbox: MemoryTransport,
    scopes: tuple[str, ...] = ("verify",),
) -> AsyncIterator[ApiClient]:
    """The app on an in-process ASGI transport, lifespan run, with a fresh API key."""
    verifier = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
    app = create_app(settings, verifier, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        _, key = await create_api_key(verifier.store, "tests", scopes, clock())
        transport = httpx.ASGITransport(app=app, client=("203.0.113.50", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield ApiClient(http, verifier, key)


@pytest.fixture
async def api(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport
) -> AsyncIterator[ApiClient]:
    async with open_api(settings, clock, outbox) as client:
        yield client


@pytest.fixture
def api_factory(clock: ManualClock, outbox: MemoryTransport) -> Callable[..., Any]:
    """``async with api_factory(settings) as client`` for tests that need other settings."""

    def factory(
        settings: Settings, scopes: tuple[str, ...] = ("verify",)
    ) -> contextlib.AbstractAsyncContextManager[ApiClient]:
        return open_api(settings, clock, outbox, scopes)

    return factory


@pytest.fixture(autouse=True)
def _quiet_otpguard_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture every log record (tests scan them for codes)."""
    caplog.set_level(logging.DEBUG)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each test, collect and then freeze (``gc.freeze``) what is still alive,
    so that the collection after the test walks only what that test made: about 2 ms a
    test, where walking everything the run had kept took 36 ms (72 s of ``make fast``).

    Not frozen in the teardown itself: pytest keeps the test's log records until its
    teardown is over, and they may hold what leaked (asyncio logs the task it could not
    finish); collected here, such a leak fails the setup of the next test instead.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage as each test ends, after its event loop has closed.

    An unclosed stream, transport or socket is otherwise finalised whenever the collector
    next runs, in whichever later test that is, and ``filterwarnings = error`` fails that
    innocent test (CI once failed a test_multi_instance test on a StreamWriter an earlier
    test had left open: "loop is closed"). Collected here, the ResourceWarning fails the
    teardown of the test that leaked it; ``python -X tracemalloc=20 -m pytest ...`` then
    shows where the object was made. Autouse fixtures are set up first, so this teardown
    runs after pytest-asyncio has closed the test's loop and cancelled what it left.
    """
    yield
    gc.collect()
