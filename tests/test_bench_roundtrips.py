"""``bench/roundtrips.py``: its relay counts turns as documented, and the script runs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(store: str, *args: str) -> dict[str, dict[str, float]]:
    """``bench/roundtrips.py`` on ``store``: its figures (the last line's JSON)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/roundtrips.py"), "--stores", store, *args],
        capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
    )  # fmt: skip
    if "redis-server is not on PATH" in done.stderr:
        from .needs import unavailable

        unavailable("redis-server is not on PATH")
    assert done.returncode == 0, done.stderr
    figures: dict[str, dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])[store]
    return figures


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py``, loaded by its path (bench/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"bench/{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench() -> ModuleType:
    return load_bench("roundtrips")


async def test_the_relay_counts_a_pipelined_burst_as_one_turn() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = _bench().TurnCounter("127.0.0.1", port)
    local = await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    writer.write(b"before\n")  # not counted: outside a request
    await writer.drain()
    assert await reader.readline() == b"before\n"
    relay.active = True
    writer.write(b"one\n")  # a request and its answer: one turn
    await writer.drain()
    assert await reader.readline() == b"one\n"
    writer.write(b"two\nthree\n")  # pipelined, then both answers read: one more
    await writer.drain()
    assert [await reader.readline(), await reader.readline()] == [b"two\n", b"three\n"]
    relay.active = False
    assert (relay.turns, relay.background) == (2, 1)
    writer.close()
    await relay.stop()
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "store", [pytest.param("redis", marks=pytest.mark.redis),
              pytest.param("postgres", marks=pytest.mark.postgres)],
)  # fmt: skip
def test_a_start_makes_two_round_trips_and_a_check_one(store: str) -> None:
    """A start: its admission, then its sent event once the provider answered (two
    operations). A check by id: one operation (``check_by_id``) and one round trip
    (``otpguard_check`` on PostgreSQL, the ``check`` script on Redis): read,
    reservation, attempt, comparison, and the approval with its bookkeeping or the
    failure's events. Counted on the wire, every request."""
    figures = _run(store, "-n", "6")
    assert set(figures) == {"start", "wrong check", "right check"}
    for name, kind in figures.items():
        assert kind["max_turns"] == (2 if name == "start" else 1) and kind["turns"] >= 1
        assert kind["operations"] == (2 if name == "start" else 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "store", [pytest.param("redis", marks=pytest.mark.redis),
              pytest.param("postgres", marks=pytest.mark.postgres)],
)  # fmt: skip
def test_a_v2_start_asks_the_store_four_things(store: str) -> None:
    """Through /v2: the service, the number's verifications (a re-send?), the admission
    with the row, the sent event (which the answer's one send is: not read back); no
    record of the verification's service is written any more (it was two more)."""
    figures = _run(store, "--v2", "-n", "4")
    assert set(figures) == {"v2 start", "v2 wrong check", "v2 right check"}
    assert figures["v2 start"]["operations"] == 4
    assert figures["v2 right check"]["operations"] == 5
