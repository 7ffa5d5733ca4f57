"""The attack simulator's plumbing: the shared clock, the server process, the phone.

Nothing here knows a rule of the server: it talks HTTP, reads the file outbox the
way a phone reads its messages and sets ``OTPGUARD_*`` variables, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import phonenumbers

HERE = Path(__file__).resolve().parent
SITE_KEY = "sim-site-key"
SITE_SECRET = "sim-site-secret"


class SimClock:
    """The simulated time the server sees (see ``simserver.py``), computed here too."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.start = time.time()
        self.t0 = time.monotonic()
        self.jump = 0.0

    def now(self) -> float:
        return self.start + self.jump + (time.monotonic() - self.t0) * self.speed

    async def sleep_until(self, t: float) -> None:
        delay = (t - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds / self.speed))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SimServer:
    """A fresh ``simserver.py`` process: its own SQLite file, file outbox and API key."""

    data_dir: Path
    clock: SimClock
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    api_key: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def outbox(self) -> Path:
        return self.data_dir / "outbox.jsonl"

    @property
    def control(self) -> Path:
        return self.data_dir / "clock-jump"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPGUARD_", "TWILIO_"))}
        env.update(
            OTPGUARD_ENV="development",
            OTPGUARD_DATA_DIR=str(self.data_dir),
            OTPGUARD_SECRET_KEYS=os.urandom(32).hex(),
            OTPGUARD_TRANSPORT="file",
            OTPGUARD_LOG_EVENTS="false",
        )
        env.update(self.settings)
        return env

    def start(self) -> None:
        """Start the server; raise ``RuntimeError`` with its output if it does not come up."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        cli = [sys.executable, "-m", "otpguard.cli"]
        created = subprocess.run(
            [*cli, "api-keys", "create", "--name", "sim"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(created.stderr.strip() or created.stdout.strip())
        self.api_key = created.stdout.strip().splitlines()[-1]
        self.port = free_port()
        log = (self.data_dir / "server.log").open("wb")
        self.process = subprocess.Popen(
            [
                *(sys.executable, str(HERE / "simserver.py"), "--port", str(self.port)),
                *("--speed", repr(self.clock.speed), "--start", repr(self.clock.start)),
                *("--t0", repr(self.clock.t0), "--control", str(self.control)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError((self.data_dir / "server.log").read_text(errors="replace"))
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator's server did not start within 30 s")
            time.sleep(0.05)  # waiting for a process to start

    async def jump(self, sim_seconds: float) -> None:
        """Skip ``sim_seconds`` of simulated time (only while no request is in flight)."""
        total = repr(self.clock.jump + sim_seconds)
        ack = self.control.with_name(self.control.name + ".ack")
        self.control.write_text(total)
        for _ in range(500):
            if ack.exists() and ack.read_text().strip() == total:
                self.clock.jump += sim_seconds
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("the server did not apply the clock jump within 5 s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


class Phone:
    """Reads the file outbox as messages arrive: every code, by verification id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes: dict[str, str] = {}
        self.messages = 0
        self._offset = 0
        self._waiters: dict[str, asyncio.Future[str]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.02)
        self.poll()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            msg = json.loads(line)
            self.messages += 1
            waiter = self._waiters.pop(msg["verification_id"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg["code"])
            else:
                self.codes[msg["verification_id"]] = msg["code"]

    async def code_for(self, vid: str, within: float) -> str | None:
        if vid in self.codes:
            return self.codes.pop(vid)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[vid] = waiter
        try:
            return await asyncio.wait_for(waiter, within)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(vid, None)

    def forget(self, vid: str) -> None:
        """The attacker never reads its codes: drop them, so memory stays bounded."""
        self.codes.pop(vid, None)


class FakeSiteverify:
    """A Turnstile-shaped siteverify endpoint on 127.0.0.1: form fields ``secret``,
    ``response``, ``remoteip``; answers ``{"success": ...}``. Tokens that start with
    ``pass-`` pass once (a reused token fails, as the real one does)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls = 0
        self.passed = 0
        self._used: set[str] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/turnstile/v0/siteverify"

    def verdict(self, fields: dict[str, str]) -> dict[str, Any]:
        self.calls += 1
        token = fields.get("response", "")
        if fields.get("secret") != SITE_SECRET:
            return {"success": False, "error-codes": ["invalid-input-secret"]}
        if not token.startswith("pass-") or token in self._used:
            return {"success": False, "error-codes": ["invalid-input-response"]}
        self._used.add(token)
        self.passed += 1
        return {"success": True, "error-codes": [], "hostname": "sim.invalid"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (x.partition(":") for x in lines[1:])
                }
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if "json" in headers.get("content-type", ""):
                    fields = {k: str(v) for k, v in json.loads(body or b"{}").items()}
                else:
                    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                out = json.dumps(self.verdict(fields)).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(out)}\r\n\r\n".encode()
                    + out
                )
                await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeSiteverify]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()


def gb_mobile(rng: random.Random) -> str:
    """A random valid United Kingdom mobile (+44 7..., not Guernsey, Jersey or Man)."""
    while True:
        e164 = f"+447{rng.randrange(10**9):09d}"
        n = phonenumbers.parse(e164)
        if (
            phonenumbers.region_code_for_number(n) == "GB"
            and phonenumbers.number_type(n) == phonenumbers.PhoneNumberType.MOBILE
        ):
            return e164


def block_number(rng: random.Random, prefix: str = "+44740012") -> str:
    """A number in one 10,000-number block, as a one-block pump uses."""
    return f"{prefix}{rng.randrange(10_000):04d}"


def attacker_ip(i: int, rng: random.Random) -> str:
    """Attempt i comes from its own /24 (a botnet or a rotating proxy pool)."""
    return f"{20 + (i >> 16) % 60}.{(i >> 8) & 255}.{i & 255}.{rng.randrange(1, 255)}"


def human_ip(rng: random.Random) -> str:
    """85 % on their own home line; 15 % behind one of 20 carrier NAT /24s."""
    if rng.random() < 0.15:
        return f"172.20.{rng.randrange(20)}.{rng.randrange(1, 255)}"
    return (
        f"{rng.randrange(80, 96)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    )
