"""The Redis store's connections pack commands with hiredis (``redis_base.HiredisPacking``):
the same bytes as redis-py's own packer for every argument the store sends, and
redis-py's packer (its bytes, its errors) for anything hiredis does not take."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from otpguard.stores.redis import RedisStore
from otpguard.stores.redis_base import HiredisPacking, hiredis_packing

FAST = hiredis_packing(Connection, {})


class Kind(enum.IntEnum):
    ONE = 1


def packed(cls: type, *args: Any) -> bytes | type[BaseException]:
    try:
        return b"".join(cls(decode_responses=True).pack_command(*args))
    except Exception as exc:
        return type(exc)


ARGS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(),  # inf and nan too: redis-py writes repr(), so does hiredis
    st.booleans(),  # refused by both (DataError)
    st.none(),
    st.sampled_from([Kind.ONE, bytearray(b"ab"), memoryview(b"cd"), "\ud800", 1.5e300]),
)


@given(st.sampled_from(["EVALSHA", "HGETALL", "SCRIPT LOAD", "PING"]), st.lists(ARGS))
def test_the_same_bytes_and_errors_as_redis_py(command: str, args: list[Any]) -> None:
    assert packed(FAST, command, *args) == packed(Connection, command, *args)


def test_a_script_call_is_packed_in_one_piece_by_hiredis() -> None:
    args = ("EVALSHA", "f" * 40, 2, "og:{rl:ip:10.0.0.1}", "og:{b:x}", 1_800_000_000.25, 60, "n")
    assert FAST(decode_responses=True).pack_command(*args) == [
        b"".join(Connection(decode_responses=True).pack_command(*args))
    ]
    assert packed(FAST, "EVALSHA", True) is DataError


@pytest.mark.parametrize("cls", [Connection, SSLConnection, UnixDomainSocketConnection])
def test_every_connection_kind_keeps_its_class(cls: type) -> None:
    fast = hiredis_packing(cls, {"encoding": "utf-8"})
    assert issubclass(fast, cls) and issubclass(fast, HiredisPacking)


def test_another_encoding_keeps_redis_pys_packer() -> None:
    assert hiredis_packing(Connection, {"encoding": "latin-1"}) is Connection
    assert hiredis_packing(Connection, {"encoding_errors": "replace"}) is Connection


@pytest.mark.redis
async def test_the_store_packs_with_hiredis(redis_url: str) -> None:
    store = RedisStore(redis_url + "?prefix=packing")
    await store.open()
    try:
        assert issubclass(store._client.connection_pool.connection_class, HiredisPacking)
        await store.health()
    finally:
        await store.aclose()
