"""Store round trips per request, counted on the wire.

    .venv/bin/python bench/roundtrips.py                 # postgres and redis, 20 pairs
    .venv/bin/python bench/roundtrips.py --stores redis -n 50
    .venv/bin/python bench/roundtrips.py --v2            # the same through /v2 (HTTP, by To)

Issue 16 asks for at most one store round trip per request on PostgreSQL and Redis.
This script counts them where they happen: the engine runs in process (a manual
clock, the memory transport, codes read from its outbox as a phone would), and its
store connects through a TCP relay that counts *turns*: a turn begins each time the
client sends after the server last spoke (or first). Pipelined commands, or several
statements sent before reading, are one turn; a statement that waits for its answer
before the next is sent is one turn each. Background traffic (a pool's health
checks) is counted separately: only turns that start while a request is running
are charged to it.

Prints, per store and per kind of request (a start, a wrong-code check, a
right-code check), the turns on the wire and the store operations the engine
called (the contract's methods), averaged over ``-n`` pairs after ``--warmup`` pairs,
and the most turns any one request took. ``--v2``: the same requests through the
Twilio-compatible API instead (``POST /v2/Services/{sid}/Verifications``, then
``VerificationCheck`` by To), on the ASGI app in process: everything a /v2 request
asks of the store beside the engine (its API key, its service, the number's
verifications, the answer's sends).
The stores are this run's own (``tests/backends.py``): a private redis-server, a
PostgreSQL database dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import inspect
import json
import random
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would shadow the standard library's ``http`` package: drop bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402 - after the sys.path change above
from tests.backends import RedisServer, create_database, drop_databases  # noqa: E402 - after the sys.path change above
from tests.conftest import make_settings  # noqa: E402 - after the sys.path change above

from otpguard.apikeys import create_api_key  # noqa: E402 - after the sys.path change above
from otpguard.clock import ManualClock  # noqa: E402 - after the sys.path change above
from otpguard.service import Verifier  # noqa: E402 - after the sys.path change above
from otpguard.stores import store_from_url  # noqa: E402 - after the sys.path change above
from otpguard.stores.base import Store  # noqa: E402 - after the sys.path change above
from otpguard.transports.memory import MemoryTransport  # noqa: E402 - after the sys.path change above
from otpguard.web.app import create_app  # noqa: E402 - after the sys.path change above


class TurnCounter:
    """A TCP relay to ``host:port`` that counts client turns while ``active``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.active = False
        self.turns = 0
        self.background = 0
        self.server: asyncio.Server | None = None
        self.relays: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.stopping = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.relays.add(task)
        task.add_done_callback(self.relays.discard)
        self.writers.append(client_w)  # closed by stop() even while the upstream opens
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            client_w.transport.abort()
            raise
        self.writers.append(server_w)
        if self.stopping:  # stop() ran while the upstream opened: it aborted only ours
            server_w.transport.abort()
        state = {"last": "server"}  # who spoke last on this connection

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, side: str) -> None:
            try:
                while data := await src.read(65536):
                    if side == "client" and state["last"] != "client":
                        if self.active:
                            self.turns += 1
                        else:
                            self.background += 1
                    state["last"] = side
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(client_r, server_w, "client"), pump(server_r, client_w, "server"))

    async def stop(self) -> None:
        self.stopping = True
        if self.server is not None:
            self.server.close()
        for writer in self.writers:  # both pumps then end at EOF, not by cancelling
            writer.transport.abort()
        await asyncio.gather(*self.relays, return_exceptions=True)


_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("inside", default=False)


def counting(store: Store, calls: collections.Counter[str]) -> None:
    """Count every contract operation the engine calls on ``store`` (in place); not
    those an operation calls itself (``check_by_id``'s steps, where it takes them one
    by one)."""
    for name in dir(type(store)):
        # Look before calling: a property may raise before the store is open.
        if name.startswith("_") or not inspect.iscoroutinefunction(
            inspect.getattr_static(store, name)
        ):
            continue
        attr = getattr(store, name)

        def wrap(fn: Callable[..., Awaitable[Any]], op: str) -> Callable[..., Awaitable[Any]]:
            async def counted(*args: Any, **kwargs: Any) -> Any:
                if _INSIDE.get():
                    return await fn(*args, **kwargs)
                calls[op] += 1
                token = _INSIDE.set(True)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _INSIDE.reset(token)

            return counted

        setattr(store, name, wrap(attr, name))


class Rig:
    """The engine in process on a store reached through a ``TurnCounter`` relay, with
    every contract operation it calls counted; ``timed`` charges a request's turns and
    operations to its kind."""

    def __init__(self, url: str, host: str, port: int) -> None:
        self.relay = TurnCounter(host, port)
        self.url, self.host, self.port = url, host, port
        self.calls: collections.Counter[str] = collections.Counter()
        self.seen: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        self.clock, self.outbox = ManualClock(), MemoryTransport()

    async def open(self) -> Verifier:
        local = await self.relay.start()
        proxied = self.url.replace(f"{self.host}:{self.port}", f"127.0.0.1:{local}", 1)
        self.settings = make_settings(Path(tempfile.mkdtemp()), store=proxied)
        self.store = store_from_url(self.settings.store_url)
        counting(self.store, self.calls)
        return Verifier(self.settings, self.store, self.outbox, clock=self.clock)

    async def timed(self, kind: str, call: Awaitable[Any], record: bool) -> Any:
        self.relay.turns = 0
        self.calls.clear()
        self.relay.active = True
        try:
            return await call
        finally:
            self.relay.active = False
            if record:
                self.seen[kind].append((self.relay.turns, sum(self.calls.values())))


def spread(rng: random.Random) -> tuple[str, str]:
    """A number and an address spread out, as real users' are (not a range walk)."""
    to = f"+447{rng.choice('45789')}{rng.randrange(10**8):08d}"
    return to, f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def wrong_for(code: str) -> str:
    return "0" * len(code) if code != "0" * len(code) else "1" * len(code)


async def measure(
    url: str, host: str, port: int, pairs: int, warmup: int = 12
) -> dict[str, dict[str, float]]:
    rig = Rig(url, host, port)
    verifier = await rig.open()
    await verifier.open()
    rng = random.Random(16)
    try:
        for i in range(warmup + pairs):
            # The warm-up opens the pool's connections and loads the scripts, and
            # makes psycopg prepare each statement (at its fifth run on a connection,
            # one extra round trip, once per statement and connection).
            record = i >= warmup
            to, ip = spread(rng)
            v = await rig.timed("start", verifier.start(to, client_ip=ip), record)
            code = rig.outbox.last_code(to)
            rig.clock.advance(5)
            wrong = verifier.check(wrong_for(code), verification_id=v.id, client_ip=ip)
            await rig.timed("wrong check", wrong, record)
            right = verifier.check(code, verification_id=v.id, client_ip=ip)
            await rig.timed("right check", right, record)
            rig.clock.advance(5)
    finally:
        await verifier.aclose()
        await rig.relay.stop()
    return summary(rig.seen)


async def measure_v2(
    url: str, host: str, port: int, pairs: int, warmup: int = 12
) -> dict[str, dict[str, float]]:
    """``measure``'s pairs through /v2: a start, then a wrong and a right check by To."""
    rig = Rig(url, host, port)
    verifier = await rig.open()
    app = create_app(rig.settings, verifier, clock=rig.clock, background=False)
    rng = random.Random(16)
    try:
        async with app.router.lifespan_context(app):
            _, key = await create_api_key(rig.store, "bench", ("verify",), rig.clock())
            transport = httpx.ASGITransport(app=app, client=("203.0.113.50", 40000))
            auth = httpx.BasicAuth("og_" + key.split("_")[1], key)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", auth=auth
            ) as http:
                made = await http.post("/v2/Services", data={"FriendlyName": "Bench"})
                base = f"/v2/Services/{made.json()['sid']}"

                async def post(path: str, data: dict[str, str]) -> None:
                    answer = await http.post(base + path, data=data)
                    assert answer.status_code in (200, 201, 404), answer.text

                for i in range(warmup + pairs):
                    record = i >= warmup
                    to, ip = spread(rng)
                    start = {"To": to, "Channel": "sms", "DeviceIp": ip}
                    await rig.timed("v2 start", post("/Verifications", start), record)
                    code = rig.outbox.last_code(to)
                    rig.clock.advance(5)
                    wrong = {"To": to, "Code": wrong_for(code)}
                    await rig.timed("v2 wrong check", post("/VerificationCheck", wrong), record)
                    right = {"To": to, "Code": code}
                    await rig.timed("v2 right check", post("/VerificationCheck", right), record)
                    rig.clock.advance(5)
    finally:
        await rig.relay.stop()
    return summary(rig.seen)


def summary(seen: dict[str, list[tuple[int, int]]]) -> dict[str, dict[str, float]]:
    return {
        kind: {
            "turns": statistics.fmean(t for t, _ in rows),
            "operations": statistics.fmean(c for _, c in rows),
            "max_turns": max(t for t, _ in rows),
        }
        for kind, rows in seen.items()
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="postgres,redis")
    parser.add_argument("-n", type=int, default=20, help="pairs to average over")
    parser.add_argument("--warmup", type=int, default=12, help="pairs before those")
    parser.add_argument("--v2", action="store_true", help="through /v2 instead")
    args = parser.parse_args()
    run = measure_v2 if args.v2 else measure
    results: dict[str, dict[str, dict[str, float]]] = {}
    redis: RedisServer | None = None
    try:
        for name in args.stores.split(","):
            if name == "postgres":
                url = create_database("roundtrips")
                results[name] = await run(url, "127.0.0.1", 5432, args.n, args.warmup)
            elif name == "redis":
                redis = RedisServer(Path(tempfile.mkdtemp())).start()
                results[name] = await run(redis.url, "127.0.0.1", redis.port, args.n, args.warmup)
            else:
                parser.error(f"unknown store {name!r}: postgres or redis")
    finally:
        if redis is not None:
            redis.stop()
        drop_databases()
    print(f"{'store':<10} {'request':<15} {'round trips':>11} {'most':>5} {'store operations':>16}")
    for store, kinds in results.items():
        for kind, f in kinds.items():
            print(
                f"{store:<10} {kind:<15} {f['turns']:>11.1f} {f['max_turns']:>5}"
                f" {f['operations']:>16.1f}"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
