"""Several otpguard instances sharing one store (Redis, then PostgreSQL).

Each test runs two real ``otpguard serve`` processes on different ports, pointed
at the same store, the same HMAC keys and the same file outbox, which the tests
read the way a phone would. The store is one of this run's own (``tests/backends.py``):
the run's private redis-server, or a PostgreSQL database named after the run. Store
outages are made with a TCP proxy that the test owns and cuts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from otpguard.codes import new_secret_hex
from otpguard.errors import ConfigError, StorageError
from otpguard.stores import store_from_url
from otpguard.transports.file import read_outbox

from .backends import BackendUnavailable, create_database
from .needs import free_port, unavailable

REDIS = "redis"  # placeholders, resolved by the shared_url fixture
POSTGRES = "postgres"
NUMBER = "+447400765432"
OTPGUARD = str(Path(sys.executable).parent / "otpguard")

pytestmark = pytest.mark.slow

SHARED_STORES = [
    pytest.param(REDIS, marks=pytest.mark.redis, id="redis"),
    pytest.param(POSTGRES, marks=pytest.mark.postgres, id="postgres"),
]


async def check_reachable(url: str) -> None:
    """Skip (or fail, in CI) when the store's module or server is missing."""
    try:
        store = store_from_url(url)
    except ConfigError as exc:
        unavailable(f"store backend for {url} is not available: {exc}")
    try:
        await store.open()
        await store.health()
    except StorageError as exc:
        unavailable(f"store server at {url} is unreachable: {exc}")
    finally:
        await store.aclose()


class TcpProxy:
    """A loopback TCP forwarder the test can cut (connections dropped, new ones
    refused) and restore on the same port: the store "goes down" and comes back.

    The proxy owns every connection from the moment it is accepted, and ``cut()`` closes
    them all, those still opening their upstream half included: a handler left pending
    when the test's loop closes would leave its sockets to the garbage collector, whose
    ResourceWarning ("loop is closed") then fails whichever later test it runs in."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A plain callback, run as the connection is accepted, so that ``cut()`` sees the
        connection at once, not only once a handler task has reached its first line."""
        self._writers.add(writer)
        self._tasks.add(asyncio.create_task(self._handle(reader, writer)))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        pipes: list[asyncio.Task[None]] = []
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            pipes = [
                asyncio.create_task(self._pipe(reader, up_writer)),
                asyncio.create_task(self._pipe(up_reader, writer)),
            ]
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except OSError:
            pass  # the target refused: drop the client's connection
        finally:  # also when cut() cancels this handler
            for pipe in pipes:
                pipe.cancel()
            for w in (writer, up_writer):
                if w is not None:
                    w.transport.abort()
                    self._writers.discard(w)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await self._settle()

    async def _settle(self) -> None:
        """Cancel every connection's handler and wait for each to close its sockets."""
        tasks, self._tasks = self._tasks, set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def url_for(self, url: str) -> str:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        netloc[-1] = host
        return urlunsplit(parts._replace(netloc="@".join(netloc)))


@dataclass
class Cluster:
    urls: list[str]  # one base URL per instance
    key: str
    outbox: Path
    headers: dict[str, str]

    def code_for(self, verification_id: str) -> str:
        codes = [
            m["code"] for m in read_outbox(self.outbox) if m["verification_id"] == verification_id
        ]
        assert len(codes) == 1, codes
        return codes[0]

    def sent(self) -> int:
        return len(read_outbox(self.outbox))


def _env(
    store_url: str, tmp_path: Path, secret: str, name: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPGUARD_")}
    data_dir = tmp_path / name
    data_dir.mkdir(exist_ok=True)
    env.update(
        {
            "OTPGUARD_STORE": store_url,
            "OTPGUARD_DATA_DIR": str(data_dir),
            "OTPGUARD_SECRET_KEYS": secret,
            "OTPGUARD_TRANSPORT": "file",
            "OTPGUARD_OUTBOX_PATH": str(tmp_path / "outbox.jsonl"),
            "OTPGUARD_LOG_EVENTS": "false",
            **(extra or {}),
        }
    )
    return env


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):  # a deadline for start-up, not a timing assertion
            if proc.poll() is not None:
                pytest.fail(f"otpguard serve exited: {_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    pytest.fail(f"otpguard serve did not start: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


def _launch(
    store_url: str, tmp_path: Path, instances: int, extra: dict[str, str] | None = None
) -> tuple[str, list[Any]]:
    """Create an API key in the shared store, then start the instances."""
    secret = new_secret_hex()
    env = _env(store_url, tmp_path, secret, "admin", extra)
    out = subprocess.run(
        [OTPGUARD, "api-keys", "create", "--name", "multi"],
        env=env,
        cwd=env["OTPGUARD_DATA_DIR"],
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip().splitlines()[-1]
    procs: list[Any] = []
    for i in range(instances):
        port = free_port()
        env_i = _env(store_url, tmp_path, secret, f"instance{i}", extra)
        with (tmp_path / f"instance{i}.log").open("wb") as fh:
            proc = subprocess.Popen(
                [OTPGUARD, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env_i,
                cwd=env_i["OTPGUARD_DATA_DIR"],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        procs.append((f"http://127.0.0.1:{port}", proc))
    return key, procs


def _stop(procs: list[Any]) -> None:
    for _, proc in procs:
        proc.terminate()
    for _, proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def cluster(
    store_url: str, tmp_path: Path, instances: int = 2, env: dict[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """``instances`` real ``otpguard serve`` processes on one store, keys and outbox;
    ``env`` adds ``OTPGUARD_*`` settings for every process."""
    # In a thread: the CLI may talk to the store through a proxy served by this loop.
    key, procs = await asyncio.to_thread(_launch, store_url, tmp_path, instances, env)
    try:
        for i, (url, proc) in enumerate(procs):
            await _wait_ready(url, proc, tmp_path / f"instance{i}.log")
        urls = [url for url, _ in procs]
        yield Cluster(urls, key, tmp_path / "outbox.jsonl", {"Authorization": f"Bearer {key}"})
    finally:
        _stop(procs)


@pytest.fixture(params=SHARED_STORES)
async def shared_url(request: pytest.FixtureRequest) -> str:
    """An empty store of this run's: a prefix of its own on the run's redis-server, or
    a fresh database named after the run."""
    if request.param == REDIS:
        url = f"{request.getfixturevalue('redis_url')}?prefix=og{uuid.uuid4().hex[:12]}"
    else:
        try:
            url = create_database("multi", "pool_timeout=2")
        except BackendUnavailable as exc:
            unavailable(str(exc))
    await check_reachable(url)
    return url


async def start(http: httpx.AsyncClient, c: Cluster, base: str, to: str, ip: str) -> httpx.Response:
    return await http.post(
        f"{base}/v1/verifications", json={"to": to, "client_ip": ip}, headers=c.headers
    )


async def check(
    http: httpx.AsyncClient, c: Cluster, base: str, vid: str, code: str
) -> httpx.Response:
    return await http.post(
        f"{base}/v1/verifications/check", json={"id": vid, "code": code}, headers=c.headers
    )


# -- tests ---------------------------------------------------------------------------------


async def test_per_number_limit_holds_across_instances(shared_url: str, tmp_path: Path) -> None:
    """Default limit: 3 sends per number in 10 minutes, in total over both instances."""
    async with cluster(shared_url, tmp_path) as c, httpx.AsyncClient(timeout=30) as http:
        a, b = c.urls
        statuses = []
        for i, base in enumerate([a, b, a, b, a]):
            r = await start(http, c, base, NUMBER, f"198.51.100.{i + 1}")
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.json()["error"]["rule"].startswith("phone"), r.text
        assert statuses == [201, 201, 201, 429, 429]
        assert c.sent() == 3


async def test_started_on_one_approved_on_the_other(shared_url: str, tmp_path: Path) -> None:
    async with cluster(shared_url, tmp_path) as c, httpx.AsyncClient(timeout=30) as http:
        a, b = c.urls
        r = await start(http, c, a, NUMBER, "198.51.100.7")
        assert r.status_code == 201, r.text
        vid = r.json()["id"]
        code = c.code_for(vid)
        r = await check(http, c, b, vid, code)
        assert r.json() == {"id": vid, "status": "approved", "valid": True, "attempts_remaining": 0}
        r = await check(http, c, a, vid, code)
        assert r.status_code == 200 and r.json()["valid"] is False
        r = await http.get(f"{a}/v1/verifications/{vid}", headers=c.headers)
        assert r.json()["status"] == "approved"


async def test_concurrent_right_checks_over_both_approve_once(
    shared_url: str, tmp_path: Path
) -> None:
    async with cluster(shared_url, tmp_path) as c, httpx.AsyncClient(timeout=30) as http:
        r = await start(http, c, c.urls[0], NUMBER, "198.51.100.8")
        vid = r.json()["id"]
        code = c.code_for(vid)
        responses = await asyncio.gather(
            *(check(http, c, c.urls[i % 2], vid, code) for i in range(16))
        )
        # Each check in flight holds a wrong-code reservation until it has compared
        # (the per-number cap is 10): beyond the cap, concurrent checks are refused
        # even with the right code. Fail closed; exactly one approves.
        for r in responses:
            if r.status_code == 429:
                assert r.json()["error"]["rule"] == "failed_checks", r.text
            else:
                assert r.status_code == 200, r.text
        assert [r.json().get("valid") for r in responses].count(True) == 1
        assert sum(r.status_code == 200 for r in responses) >= 10


async def test_store_outage_fails_closed_and_recovers(shared_url: str, tmp_path: Path) -> None:
    """Store unreachable: starts and checks answer 503 ``unavailable`` and nothing is
    sent; once it is back the same processes serve again, without a restart."""
    parts = urlsplit(shared_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = TcpProxy(parts.hostname, parts.port)
    await proxy.start()
    try:
        async with (
            cluster(proxy.url_for(shared_url), tmp_path) as c,
            httpx.AsyncClient(timeout=30) as http,
        ):
            a, b = c.urls
            r = await start(http, c, a, NUMBER, "198.51.100.9")
            assert r.status_code == 201, r.text
            vid = r.json()["id"]
            code = c.code_for(vid)
            sent = c.sent()

            await proxy.cut()
            for base in (a, b):
                r = await start(http, c, base, "+447400111222", "198.51.100.10")
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "unavailable"
                r = await check(http, c, base, vid, code)
                assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
            assert c.sent() == sent  # fail closed: no message left

            await proxy.start()
            # Pooled connections died with the outage; each instance may need a few
            # requests to notice. A deadline for recovery, not a timing assertion.
            for base in (a, b):
                for _ in range(100):
                    r = await http.get(f"{base}/readyz")
                    if r.status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert r.status_code == 200, r.text
            r = await check(http, c, b, vid, code)
            assert r.status_code == 200 and r.json()["valid"] is True, r.text
            r = await start(http, c, a, "+447400111222", "198.51.100.10")
            assert r.status_code == 201, r.text
            assert c.sent() == sent + 1
    finally:
        await proxy.cut()


async def test_a_block_from_the_cli_stops_both_instances_at_once(
    shared_url: str, tmp_path: Path
) -> None:
    """``otpguard numbers block`` on the shared store: the next start on either running
    instance is refused, with no restart; ``unblock`` lets the number through again."""
    env = _env(shared_url, tmp_path, new_secret_hex(), "cli")

    def numbers(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [OTPGUARD, "numbers", *args], env=env, capture_output=True, text=True, check=False
        )

    async with cluster(shared_url, tmp_path) as c, httpx.AsyncClient(timeout=30) as http:
        a, b = c.urls
        assert (await start(http, c, a, NUMBER, "198.51.100.21")).status_code == 201
        blocked = await asyncio.to_thread(numbers, "block", NUMBER[:-3], "--note", "ticket 12")
        assert blocked.returncode == 0, blocked.stderr
        for i, base in enumerate([b, a]):
            r = await start(http, c, base, NUMBER, f"198.51.100.{22 + i}")
            assert r.status_code == 403, r.text
            assert r.json()["error"]["reason"] == "blocklisted"
        listed = await asyncio.to_thread(numbers, "list")
        assert f"block  {NUMBER[:-3]}" in listed.stdout and "ticket 12" in listed.stdout
        removed = await asyncio.to_thread(numbers, "unblock", NUMBER[:-3])
        assert removed.returncode == 0, removed.stderr
        assert (await start(http, c, b, NUMBER, "198.51.100.24")).status_code == 201
        assert c.sent() == 2
