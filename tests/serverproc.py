"""A real ``otpguard serve`` in a subprocess, for tests that talk to it over HTTP.

    with otpguard_server(tmp_path) as server:
        client = Client(server.base_url, server.api_key)
        v = client.start(fresh_number())
        code = server.last_code(v.id)       # read from the file outbox, like a phone

The server runs in development mode on a free port with its own data directory,
the file transport (``<data_dir>/outbox.jsonl``) and an API key created through
the CLI. Extra settings are passed as keyword arguments: ``limit_phone="off"``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from otpguard.codes import new_secret_hex
from otpguard.transports.file import read_outbox

from .needs import free_port

STARTUP_TIMEOUT = 30.0
_numbers = itertools.count(1)


def fresh_number() -> str:
    """A valid UK mobile number, different on each call and with its own prefix.

    Each number has its own "number minus the last 4 digits", so a test's sends
    never add up to the per-prefix limit or the sequential-numbers fraud rule."""
    n = next(_numbers)
    return f"+4474{n // 100 % 50:02d}{n % 100:02d}1234"


@dataclass
class Server:
    base_url: str
    api_key: str
    outbox_path: Path
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def messages(self) -> list[dict[str, str]]:
        return read_outbox(self.outbox_path)

    def last_code(self, verification_id: str) -> str:
        """The newest code sent for a verification (raises if none was sent)."""
        for msg in reversed(self.messages()):
            if msg["verification_id"] == verification_id:
                return msg["code"]
        raise LookupError(f"no message in the outbox for {verification_id}")

    def last_code_to(self, to: str) -> str:
        for msg in reversed(self.messages()):
            if msg["to"] == to:
                return msg["code"]
        raise LookupError(f"no message in the outbox for {to}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``otpguard ARGS`` with this server's settings."""
        return subprocess.run(
            [sys.executable, "-m", "otpguard.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def server_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPGUARD_", "TWILIO_"))}
    env.update(
        {
            "OTPGUARD_ENV": "development",
            "OTPGUARD_DATA_DIR": str(data_dir),
            "OTPGUARD_SECRET_KEYS": new_secret_hex(),
            "OTPGUARD_TRANSPORT": "file",
        }
    )
    env.update({f"OTPGUARD_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.contextmanager
def otpguard_server(tmp_dir: Path, **settings: str) -> Iterator[Server]:
    """Start ``otpguard serve``; yield once ``/healthz`` answers; stop it on exit."""
    data_dir = tmp_dir / "otpguard-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = server_env(data_dir, **settings)
    created = subprocess.run(
        [sys.executable, "-m", "otpguard.cli", "api-keys", "create", "--name", "tests"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if created.returncode != 0:
        raise RuntimeError(f"otpguard api-keys create failed: {created.stderr}")
    api_key = created.stdout.strip().splitlines()[-1]

    port = free_port()
    log_path = tmp_dir / "otpguard-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otpguard.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        base_url=f"http://127.0.0.1:{port}",
        api_key=api_key,
        outbox_path=data_dir / "outbox.jsonl",
        data_dir=data_dir,
        log_path=log_path,
        env=env,
        process=process,
    )
    try:
        _wait_until_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"otpguard serve exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"otpguard serve did not start in time:\n{server.log()}")
        time.sleep(0.05)  # waiting for a process to start, not testing time
