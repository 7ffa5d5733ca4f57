"""The TCP proxy the outage tests cut (``tests/test_multi_instance.py``): a cut closes
every connection it carries, however far the proxy had got in opening it.

A connection left half-open by a cut once outlived its test: the garbage collector
finalised its StreamWriter during a later test, whose ``filterwarnings = error`` then
failed on a ResourceWarning ("loop is closed") that test had nothing to do with.
"""

from __future__ import annotations

import asyncio

import pytest

from .test_multi_instance import TcpProxy

DEADLINE = 5.0  # for an end of stream that should come at once, not a timing assertion


class Echo:
    """A loopback echo server that keeps the task serving each of its connections."""

    def __init__(self) -> None:
        self.handlers: list[asyncio.Task[object]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("turns", range(8))
async def test_a_cut_closes_a_connection_at_any_stage_of_its_opening(turns: int) -> None:
    """``turns`` loop iterations pass between the client's connect and the cut: from a
    connection accepted but not yet handled, through one still opening its upstream half,
    to one whose pipes run. Each ends on both sides, and nothing is left to collect
    (the autouse ``gc.collect()`` in conftest.py would fail this test on a leak)."""
    echo = Echo()
    async with echo as port:
        proxy = TcpProxy("127.0.0.1", port)
        await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            for _ in range(turns):
                await asyncio.sleep(0)
            await proxy.cut()
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            # The upstream half, where the proxy had opened it, ends too.
            await asyncio.wait_for(asyncio.gather(*echo.handlers), DEADLINE)
        finally:
            writer.close()
            await proxy.cut()


async def test_the_proxy_carries_data_and_comes_back_after_a_cut() -> None:
    echo = Echo()
    async with echo as port:
        proxy = TcpProxy("127.0.0.1", port)
        await proxy.start()
        try:
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"ping\n")
                assert await asyncio.wait_for(reader.readline(), DEADLINE) == b"ping\n"
                await proxy.cut()
                assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
                writer.close()
                with pytest.raises(OSError):
                    await asyncio.open_connection("127.0.0.1", proxy.port)
                await proxy.start()
        finally:
            await proxy.cut()
