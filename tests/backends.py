"""Store servers for one test run (and one ``bench/http.py`` run): nothing shared by name.

Several developers run the suite at once on one machine, against one PostgreSQL and
one Redis. Fixed database names let two runs wipe each other's data, so:

- ``RUN_ID`` is drawn once per process (a pytest run, a bench run);
- Redis: each run starts a private ``redis-server`` on a free loopback port
  (``RedisServer``); the shared Redis on 6379 is never touched, so wiping a test's
  data (FLUSHDB) can only ever hit the run's own server (``is_private`` guards it);
- PostgreSQL: each run makes its databases on the shared server, named
  ``ogt_<RUN_ID>_<purpose>`` (``create_database``), and drops them, and only them,
  at its end (``drop_databases``, from ``pytest_sessionfinish``). A run that is
  killed leaves its ``ogt_<RUN_ID>_*`` databases behind: no run drops another's.

Nothing here imports pytest: ``tests/conftest.py`` turns ``BackendUnavailable`` into
a skip (or, under ``REQUIRE_TEST_BACKENDS=1``, a failure; ``tests/needs.py``).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

RUN_ID = secrets.token_hex(4)
HOST = "127.0.0.1"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_ADMIN_URL = f"{PG_SERVER}/postgres"
READY_TIMEOUT = 20.0
POLL = 0.02  # seconds between readiness probes (a deadline, not a timing assertion)

_created_databases: set[str] = set()
_private_redis: set[str] = set()  # "host:port" of every server a RedisServer started


class BackendUnavailable(RuntimeError):
    """A server or a module the run needs is missing; the message says which."""


# -- PostgreSQL ------------------------------------------------------------------------


def database_name(purpose: str) -> str:
    if not purpose.isidentifier() or not purpose.islower():
        raise ValueError(f"purpose must be a lower-case identifier, not {purpose!r}")
    return f"ogt_{RUN_ID}_{purpose}"


def create_database(purpose: str, query: str = "") -> str:
    """An empty database of this run's (made again if this run made it before), as a
    store URL with ``query`` (e.g. ``"pool_timeout=2"``) appended."""
    try:
        import psycopg
    except ImportError as exc:
        raise BackendUnavailable(f"the postgres extra is not installed: {exc}") from exc
    name = database_name(purpose)
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            _created_databases.add(name)
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # ours: RUN_ID
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        raise BackendUnavailable(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}") from exc
    return f"{PG_SERVER}/{name}" + (f"?{query}" if query else "")


def drop_databases() -> list[str]:
    """Drop every database this process created; the names of those it could not drop."""
    if not _created_databases:
        return []
    import psycopg

    left = []
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            for name in sorted(_created_databases):
                try:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                    _created_databases.discard(name)
                except psycopg.Error:
                    left.append(name)
    except psycopg.OperationalError:
        left = sorted(_created_databases)
    return left


# -- Redis -----------------------------------------------------------------------------


def is_private(url: str) -> bool:
    """True for a ``redis://`` URL naming a server a ``RedisServer`` of this process started."""
    netloc = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    return netloc in _private_redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _server_pid(port: int) -> int | None:
    """The ``process_id`` the server on ``port`` reports (None: nothing answers yet)."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


class RedisServer:
    """A ``redis-server`` of this run's own: loopback, a free port, no persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise BackendUnavailable("redis-server is not on PATH (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another process may take the free port before we bind it
            self.port = _free_port()
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory),
                 "--logfile", str(self.directory / f"redis-{self.port}.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + READY_TIMEOUT
            while self.proc.poll() is None and time.monotonic() < deadline:
                # The pid check: a server answering on the port must be ours.
                if _server_pid(self.port) == self.proc.pid:
                    _private_redis.add(f"{HOST}:{self.port}")
                    return self
                time.sleep(POLL)
            self.stop()
        raise BackendUnavailable(f"could not start redis-server (see {self.directory})")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _private_redis.discard(f"{HOST}:{self.port}")
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
