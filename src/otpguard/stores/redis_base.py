"""What every part of the Redis store shares: the client, its keys and the scripts.

``RedisBase`` holds the connection (one Redis through a bounded blocking pool, or a
Redis Cluster client), the key names, and ``_run`` (one script by name). The store's
parts (``redis_verifications.py``, ``redis_rates.py``, ``redis_admin.py``,
``redis_lists.py``, ``webhooks_redis.py``) derive from it, and ``RedisStore``
(``redis.py``) joins them with the contract. Errors are not caught here:
``Store.__init_subclass__`` translates them around every public operation, through
``backend_error``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from .redis_url import Options, cluster_kwargs, parse_url

try:
    import hiredis

    HIREDIS = True
except ImportError:  # the redis extra installs it; without it redis-py packs in Python
    HIREDIS = False

# redis-py's own failures and a lost socket: what backend_error translates.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
SOCKET_TIMEOUT = 5.0
SCAN_COUNT = 1_000
BATCH = 500  # ids per HMGET / pipeline, entries per ZADD inside scripts


class NotOpen(Exception):
    """An operation on a store that is not open (or closed)."""


def escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def to_json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


class HiredisPacking:
    """A redis-py asyncio connection that packs commands with ``hiredis.pack_command``
    (C) where redis-py's own ``pack_command`` joins every argument in Python: a script
    call with its dozens of arguments cost ~100 us of CPU to pack, ~20 us this way.
    The bytes are the same (``tests/test_redis_packing.py``); anything hiredis does not
    take as it is (a bool, an IntEnum, a bytearray, ...) goes to redis-py's packer, so
    its encoding and its errors stay redis-py's."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " not in first:  # a command name, as it almost is
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        # "SCRIPT LOAD" (one argument per word), or an argument hiredis refuses.
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]  # the mixin comes before a redis-py connection class
        return packed


def hiredis_packing(connection_class: type, connection_kwargs: Mapping[str, Any]) -> type:
    """``connection_class`` packing with hiredis, when hiredis is installed and the
    client encodes strings as hiredis does (UTF-8, strict)."""
    encoding = (
        connection_kwargs.get("encoding", "utf-8"),
        connection_kwargs.get("encoding_errors", "strict"),
    )
    if not HIREDIS or encoding != ("utf-8", "strict"):
        return connection_class
    return type(f"Hiredis{connection_class.__name__}", (HiredisPacking, connection_class), {})


class RedisBase:
    """The plumbing of ``RedisStore``; ``LUA`` is every script by name (``redis.py``)."""

    LUA: ClassVar[Mapping[str, str]] = {}

    def __init__(self, url: str) -> None:
        self.url = url
        self._opts: Options = parse_url(url)
        self._cluster_kwargs = cluster_kwargs(self._opts.client_kwargs)
        # redis-py's command methods are typed ``Awaitable[T] | T`` (shared with the sync
        # client), so the client is held as Any rather than casting every call.
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    def backend_error(self, exc: Exception) -> str | None:
        """redis-py's errors and lost sockets by class name; never keys or values."""
        if isinstance(exc, NotOpen):
            return "store is not open"
        return type(exc).__name__ if isinstance(exc, REDIS_ERRORS) else None

    # -- keys -------------------------------------------------------------------------

    def _vkey(self, verification_id: str) -> str:
        return f"{self._opts.prefix}:{{v:{verification_id}}}"

    def _nkey(self, to: str) -> str:
        return f"{self._opts.prefix}:{{n:{to}}}:pending"

    def _rkey(self, key: str) -> str:
        return f"{self._opts.prefix}:{{rl:{key}}}"

    def _fkey(self, key: str) -> str:
        return f"{self._opts.prefix}:{{f:{key}}}"

    def _bkey(self, key: str) -> str:
        return f"{self._opts.prefix}:{{b:{key}}}"

    # -- the client ---------------------------------------------------------------------

    @property
    def _live(self) -> Any:
        """The open client (NotOpen, translated to StorageError, when there is none)."""
        if self._client is None:
            raise NotOpen
        return self._client

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._client is None:  # the scripts are registered on the client opened
            raise NotOpen
        # What redis-py's Script.__call__ does, without its per-call isinstance check
        # against a Protocol-derived Pipeline (a slow check) and its copies of the lists.
        client, code = self._client, self._scripts[script]
        try:
            return await client.evalsha(code.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: load it again, as Script does
            code.sha = await client.script_load(code.script)
            return await client.evalsha(code.sha, len(keys), *keys, *args)

    def _one_slot(self, keys: Sequence[str]) -> bool:
        """Whether one script may touch every key (always, outside Cluster)."""
        if not self._opts.cluster or len(keys) <= 1:
            return True
        return len({self._live.keyslot(k) for k in keys}) == 1

    async def open(self) -> None:
        if self._client is not None:  # open() is idempotent
            return
        client = self._cluster_client() if self._opts.cluster else self._standalone_client()
        if self._opts.cluster:
            # Learn the slot map before any concurrent use: redis-py's async cluster
            # client, initialised lazily by concurrent first commands, was seen handing
            # a half-connected connection to a command (tests/test_redis_store.py).
            try:
                await client.initialize()
            except BaseException:
                await client.aclose()
                raise
        self._scripts = {name: client.register_script(code) for name, code in self.LUA.items()}
        self._client = client

    def _standalone_client(self) -> Any:
        # A bounded pool that makes a burst wait (up to pool_timeout) for a free
        # connection, where redis-py's default pool fails at once past its size. One
        # quick retry on a dropped connection (a pooled socket that died while Redis
        # restarted); no backoff: otpguard fails closed rather than waiting.
        pool = aioredis.BlockingConnectionPool.from_url(
            self._opts.client_url,
            max_connections=self._opts.max_connections,
            timeout=self._opts.pool_timeout,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        # Before any connection is made: every one of them packs with hiredis.
        pool.connection_class = hiredis_packing(pool.connection_class, pool.connection_kwargs)
        return aioredis.Redis.from_pool(pool)

    def _cluster_client(self) -> Any:
        o = self._opts
        kwargs: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
            **self._cluster_kwargs,
        }
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in o.nodes],
            username=o.username,
            password=o.password,
            decode_responses=True,
            retry=Retry(NoBackoff(), 2),
            max_connections=o.max_connections,
            **kwargs,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def health(self) -> None:
        if self._opts.cluster:
            await self._live.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self._live.ping()

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        """Every key matching ``pattern``; in Cluster, on every primary."""
        client = self._live
        if not self._opts.cluster:
            async for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
                yield key
            return
        for node in client.get_primaries():
            cursor = 0
            while True:
                cursor, keys = await node.execute_command(
                    "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
                )
                for key in keys:
                    yield key
                if int(cursor) == 0:
                    break
