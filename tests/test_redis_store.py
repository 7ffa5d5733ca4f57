"""Redis-specific behaviour of ``otpguard.stores.redis`` beyond the contract suite:
TTLs (nothing needs purging), the hash-tag slot layout, Cluster's acquire-then-
compensate ``hit``, reconnecting after an outage, exact floats through Lua, URLs.

Tests use the run's private redis-server (the ``redis_url`` fixture, ``tests/backends.py``;
never the shared Redis), each under a prefix of its own, and delete only their own keys.
Memory staying flat over many expired verifications is a bench matter, not a test.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot

from otpguard.errors import ConfigError, StorageError
from otpguard.events import Event
from otpguard.models import Bucket, Channel, RateRule, Status, Verification
from otpguard.stores import Alert, ApiKey, EventQuery, store_from_url
from otpguard.stores.base import ServiceRecord
from otpguard.stores.redis import RedisStore
from otpguard.stores.redis_admin import FLAG_KEEP
from otpguard.stores.redis_lua_rates import RATE_KEEP
from otpguard.stores.redis_verifications import VERIFICATION_KEEP

from .dump import dump_store
from .needs import unavailable
from .redis_cluster import ClusterUnavailable, RedisClusterProcess, free_ports

T0 = 1_800_000_000.0
NUMBER = "+447400123456"


def make_v(**changes: Any) -> Verification:
    v = Verification(
        id="VE" + uuid.uuid4().hex,
        to=NUMBER,
        channel=Channel.SMS,
        status=Status.PENDING,
        key_id="k1",
        code_hash="tag-" + uuid.uuid4().hex,
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + 600,
        resend_available_at=T0 + 30,
    )
    return v.with_(**changes)


async def _open(url: str) -> RedisStore:
    store = store_from_url(url)
    assert isinstance(store, RedisStore)
    try:
        await store.open()
        await store.health()
    except StorageError as exc:
        await store.aclose()
        unavailable(f"Redis at {url} is unreachable: {exc}")
    return store


async def _delete_prefix(client: Any, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(raw: Any, redis_url: str) -> AsyncIterator[RedisStore]:
    prefix = f"ogtest-{uuid.uuid4().hex[:12]}"
    s = await _open(f"{redis_url}?prefix={prefix}")
    try:
        yield s
    finally:
        await s.aclose()
        await _delete_prefix(raw, prefix)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc = RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster"))
    try:
        proc.start()
    except ClusterUnavailable as exc:
        unavailable(f"cannot start a Redis Cluster: {exc}")
    try:
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture
async def cluster_store(cluster: str) -> AsyncIterator[RedisStore]:
    s = await _open(f"{cluster}/?prefix=og{uuid.uuid4().hex[:8]}")
    try:
        yield s
    finally:
        await s.aclose()


async def _exercise(store: RedisStore) -> Verification:
    """Touch every kind of key the store writes."""
    v = make_v()
    await store.create_verification(v)
    await store.hit([RateRule("r", "phone:x:600", 5, 600)], T0)
    await store.set_flag("suspend:+4474", "x", T0 + 100)
    await store.add_events([Event(type="t", ts=T0, id=f"{1:025x}")])
    await store.put_alert(Alert("a", "burst", "+4474", "open", T0, T0))
    await store.create_api_key(ApiKey("ok_1", "web", "kh", ("verify",), T0))
    await store.put_service(ServiceRecord("VA1", "AC1", "{}", T0), 1)
    await store.sign_out("nonce", T0 + 100)
    return v


# -- TTLs: nothing needs purging ----------------------------------------------------------


@pytest.mark.redis
async def test_every_key_but_alerts_api_keys_and_services_expires(
    store: RedisStore, raw: Any
) -> None:
    v = await _exercise(store)
    p = store._opts.prefix
    ttls = {k: await raw.pttl(k) async for k in raw.scan_iter(match=f"{p}:*")}
    persistent = {k for k, t in ttls.items() if t < 0}
    services = {f"{p}:{{svc}}:records", f"{p}:{{svc}}:of:AC1", f"{p}:{{svc}}:adopted"}
    assert persistent == {f"{p}:{{alerts}}", f"{p}:{{apikeys}}", *services}
    lifetime = v.expires_at - v.created_at
    # Generous: the key outlives the logical expiry by VERIFICATION_KEEP.
    assert (lifetime + VERIFICATION_KEEP - 60) * 1000 < ttls[f"{p}:{{v:{v.id}}}"]
    assert ttls[f"{p}:{{v:{v.id}}}"] <= (lifetime + VERIFICATION_KEEP) * 1000
    assert ttls[f"{p}:{{n:{NUMBER}}}:pending"] >= ttls[f"{p}:{{v:{v.id}}}"]
    assert ttls[f"{p}:{{rl:phone:x:600}}"] > (600 + RATE_KEEP - 60) * 1000
    assert ttls[f"{p}:{{f:suspend:+4474}}"] > FLAG_KEEP * 1000 - 60_000


@pytest.mark.redis
async def test_resend_extends_the_ttl_never_shortens(store: RedisStore, raw: Any) -> None:
    v = make_v()
    await store.create_verification(v)
    vkey = f"{store._opts.prefix}:{{v:{v.id}}}"
    before = await raw.pttl(vkey)
    assert await store.replace_code(
        v.id, "k2", "t2", T0 + 30, T0 + 30 + 5000, T0 + 90, replaces=v.code_hash
    )
    assert await raw.pttl(vkey) > before + 4_000_000
    assert await store.replace_code(v.id, "k2", "t3", T0 + 90, T0 + 100, T0 + 120, replaces="t2")
    assert await raw.pttl(vkey) > before + 4_000_000


@pytest.mark.redis
async def test_hit_trims_entries_older_than_the_window(store: RedisStore, raw: Any) -> None:
    r = RateRule("r", "k", 100, 60)
    for t in range(0, 300, 10):
        await store.hit([r], T0 + t)
    assert await raw.zcard(f"{store._opts.prefix}:{{rl:k}}") == 6  # (T0+230, T0+290]
    assert await store.count("k", 60, T0 + 290) == 6


@pytest.mark.redis
async def test_batched_counts_and_flags(store: RedisStore) -> None:
    await store.hit([RateRule("r", "a", 9, 60)], T0, cost=2)
    await store.hit([RateRule("r", "b", 9, 60)], T0 + 30)
    assert await store.counts([("a", 60), ("b", 60), ("a", 10), ("c", 60)], T0 + 59) == [2, 1, 0, 0]
    await store.set_flag("x", "1", T0 + 10)
    await store.set_flag("y", "2", T0 + 100)
    assert await store.get_flags(["x", "y", "z"], T0 + 10) == {"y": "2"}
    assert await store.counts([], T0) == [] and await store.get_flags([], T0) == {}


@pytest.mark.redis
async def test_equal_timestamps_do_not_collide(store: RedisStore) -> None:
    r = RateRule("r", "k", 100, 60)
    await asyncio.gather(*(store.hit([r], T0) for _ in range(20)))
    await store.hit([r], T0, cost=5)
    assert await store.count("k", 60, T0) == 25


# -- exact floats through Lua -------------------------------------------------------------


@pytest.mark.redis
async def test_timestamps_with_microseconds_are_exact(store: RedisStore) -> None:
    now = 1_761_234_567.123456  # 16 significant digits: more than Lua's %.14g
    v = make_v(created_at=now, updated_at=now, expires_at=now + 300.000001,
               resend_available_at=now + 30.5)  # fmt: skip
    await store.create_verification(v)
    assert await store.get_verification(v.id) == v
    ticket = await store.record_attempt(v.id, 5, now + 0.000001)
    assert ticket is not None and ticket.verification.updated_at == now + 0.000001
    expired = now + 300.000001  # expires_at == now: expired
    assert not await store.approve(v.id, expired, code_hash=v.code_hash)
    assert now + 299.9999995 < v.expires_at  # one ulp here is 2.4e-7 s
    assert await store.approve(v.id, now + 299.9999995, code_hash=v.code_hash)
    r = RateRule("r", "k", 1, 60)
    await store.hit([r], now)
    refused = await store.hit([r], now + 7.3)
    assert refused.retry_after == now + 60 - (now + 7.3)
    assert await store.count("k", 60, now + 60) == 0
    assert await store.count("k", 60, now + 59.999999) == 1


# -- key layout ---------------------------------------------------------------------------


@pytest.mark.redis
async def test_keys_are_hash_tagged_per_verification_and_rate_key(
    store: RedisStore, raw: Any
) -> None:
    v = await _exercise(store)
    p = store._opts.prefix
    keys = [k async for k in raw.scan_iter(match=f"{p}:*")]
    assert all("{" in k and "}" in k for k in keys)
    v_keys = [k for k in keys if v.id in k]
    assert len({key_slot(k.encode()) for k in v_keys}) == 1
    assert key_slot(f"{p}:{{v:{v.id}}}".encode()) == key_slot(f"{{v:{v.id}}}".encode())
    events = [k for k in keys if "{ev}" in k]  # the events and their counts: one slot
    assert len([k for k in events if ":cnt:" not in k]) == 3
    assert f"{p}:{{ev}}:cnt:t" in events and f"{p}:{{ev}}:cnt:t:idx" in events
    assert len({key_slot(k.encode()) for k in events}) == 1
    api = [k for k in keys if "{apikeys}" in k]
    assert len({key_slot(k.encode()) for k in api}) == 1
    services = [k for k in keys if "{svc}" in k]  # a put, a list, a delete: one script each
    assert len(services) == 3 and len({key_slot(k.encode()) for k in services}) == 1
    # One sorted set per rate key, its slot decided by the key alone.
    assert [k for k in keys if "{rl:" in k] == [f"{p}:{{rl:phone:x:600}}"]


@pytest.mark.redis_cluster
async def test_cluster_spreads_verifications_over_nodes(cluster_store: RedisStore) -> None:
    ids = []
    for _ in range(30):
        v = make_v()
        await cluster_store.create_verification(v)
        ids.append(v.id)
    slots = {key_slot(cluster_store._vkey(i).encode()) for i in ids}
    nodes = {cluster_store._client.nodes_manager.get_node_from_slot(s).name for s in slots}
    assert len(nodes) > 1
    for vid in ids:
        got = await cluster_store.get_verification(vid)
        assert got is not None and got.id == vid
    dumped = await dump_store(cluster_store)
    assert all(vid in dumped for vid in ids)
    assert await cluster_store.find_pending(NUMBER, T0 + 1) is not None


# -- hit in Cluster: acquire, then compensate ----------------------------------------------


async def _a_large_limit_is_a_limit(store: RedisStore, keys: tuple[str, str]) -> None:
    """Only ``record_only`` makes a rule a counter: a huge limit is counted and judged
    like any other (it once meant "record-only" here), and it is the fullest rule."""
    big = RateRule("big", keys[0], 2**40, 60)
    counter = RateRule("counter", keys[1], 0, 60, record_only=True)
    for n in (1, 2, 3):
        d = await store.hit([big, counter], T0 + n)
        assert (d.allowed, d.count) == (True, n)
    assert await store.count(keys[1], 60, T0 + 3) == 3  # recorded, never refusing
    assert not (await store.hit([RateRule("big", keys[0], 3, 60)], T0 + 4)).allowed


@pytest.mark.redis
async def test_a_large_limit_is_a_limit(store: RedisStore) -> None:
    await _a_large_limit_is_a_limit(store, ("big", "counter"))


@pytest.mark.redis_cluster
async def test_a_large_limit_is_a_limit_across_slots(cluster_store: RedisStore) -> None:
    keys = ("ka", "kb")
    assert len({key_slot(cluster_store._rkey(k).encode()) for k in keys}) == 2
    await _a_large_limit_is_a_limit(cluster_store, keys)


@pytest.mark.redis_cluster
async def test_cluster_refusal_removes_what_earlier_rules_added(cluster_store: RedisStore) -> None:
    keys = ["ka", "kb", "kc"]
    assert len({key_slot(cluster_store._rkey(k).encode()) for k in keys}) == 3
    await cluster_store.hit([RateRule("c", "kc", 1, 60)], T0)
    rules = [RateRule("a", "ka", 10, 60), RateRule("b", "kb", 10, 60), RateRule("c", "kc", 1, 60)]
    refused = await cluster_store.hit(rules, T0 + 1, cost=2)
    assert not refused.allowed and refused.rule == "c"
    client = cluster_store._client
    assert await client.zcard(cluster_store._rkey("ka")) == 0
    assert await client.zcard(cluster_store._rkey("kb")) == 0
    assert await cluster_store.count("kc", 60, T0 + 1) == 1


@pytest.mark.redis_cluster
async def test_cluster_multi_slot_hit_exact_under_concurrency(cluster_store: RedisStore) -> None:
    """Every admitted hit is counted under every rule, and nothing refused stays counted."""
    rules = [
        RateRule("loose", "kx", 40, 60),
        RateRule("tight", "ky", 7, 60),
        RateRule("mid", "kz", 20, 60),
    ]
    decisions = await asyncio.gather(*(cluster_store.hit(rules, T0) for _ in range(60)))
    admitted = sum(d.allowed for d in decisions)
    assert admitted == 7
    for key in ("kx", "ky", "kz"):
        assert await cluster_store.count(key, 60, T0) == 7


@pytest.mark.redis_cluster
async def test_cluster_rules_sharing_a_key_across_slots(cluster_store: RedisStore) -> None:
    minute, other, hour = (RateRule("minute", "k1", 2, 60), RateRule("other", "k2", 10, 60),
                           RateRule("hour", "k1", 10, 3600))  # fmt: skip
    for t in (0, 1):
        assert (await cluster_store.hit([minute, other, hour], T0 + t)).allowed
    refused = await cluster_store.hit([other, hour, minute], T0 + 2)
    assert (refused.allowed, refused.rule, refused.count) == (False, "minute", 2)
    assert await cluster_store.count("k1", 3600, T0 + 2) == 2
    assert await cluster_store.count("k2", 60, T0 + 2) == 2


@pytest.mark.redis_cluster
async def test_cluster_bucket_refusal_takes_back_the_earlier_steps(
    cluster_store: RedisStore,
) -> None:
    roomy = Bucket("global", "adm:all", base=10, tau=3600, share=0.0)
    full = Bucket("country", "adm:GB", base=1, tau=3600, share=0.0)
    rule = RateRule("phone", "phone:q", 10, 600)
    keys = [
        cluster_store._rkey("phone:q"),
        cluster_store._bkey(roomy.key),
        cluster_store._bkey(full.key),
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 3
    assert (await cluster_store.admit([rule], [roomy, full], T0)).allowed
    refused = await cluster_store.admit([rule], [roomy, full], T0)
    assert (refused.allowed, refused.key) == (False, full.key)
    # The rule's entry and the roomy bucket's raise of the refused send are gone.
    assert await cluster_store.count("phone:q", 600, T0) == 1
    level = await cluster_store._client.hget(cluster_store._bkey(roomy.key), "level")
    assert float(level) == 1.0
    ttl = await cluster_store._client.pttl(cluster_store._bkey(roomy.key))
    assert 0 < ttl <= 20 * 3600 * 1000


# -- errors and outages -------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_errors_become_storage_errors_without_values(
    store: RedisStore, raw: Any
) -> None:
    secret_id = "VE-wrong-type-5e3c"
    await raw.set(store._vkey(secret_id), "not a hash")
    with pytest.raises(StorageError) as info:
        await store.get_verification(secret_id)
    assert str(info.value) == "redis store: get_verification failed (ResponseError)"
    assert info.value.__cause__ is not None


@pytest.mark.redis
async def test_mixin_operations_translate_their_errors_too(store: RedisStore, raw: Any) -> None:
    """The list and webhook parts are translated by the same ``Store.__init_subclass__``."""
    p = store._opts.prefix
    await raw.set(f"{p}:{{nl}}:entries", "not a hash")
    await raw.set(f"{p}:{{wh}}:ep", "not a hash")
    with pytest.raises(StorageError) as listed:
        await store.list_entries(T0)
    assert str(listed.value) == "redis store: list_entries failed (ResponseError)"
    with pytest.raises(StorageError) as hooks:
        await store.list_webhook_endpoints()
    assert str(hooks.value) == "redis store: list_webhook_endpoints failed (ResponseError)"


@pytest.mark.redis
async def test_a_bug_is_not_disguised_as_a_storage_error(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="cost"):
        await store.hit([RateRule("r", "k", 3, 60)], T0, cost=-1)


def _start_server(port: int, directory: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def _until_up(store: RedisStore) -> None:
    """Poll a readiness condition (the server answers PING), with a deadline."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            await store.health()
            return
        except StorageError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.slow  # starts and restarts its own redis-server
@pytest.mark.redis
async def test_store_works_again_after_a_redis_restart(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH")
    port = free_ports(1)[0]
    server = _start_server(port, tmp_path)
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    try:
        await store.open()
        await _until_up(store)
        v = make_v()
        await store.create_verification(v)
        assert await store.approve(v.id, T0 + 1, code_hash=v.code_hash)

        server.kill()
        server.wait(timeout=10)
        with pytest.raises(StorageError):
            await store.get_verification(v.id)
        with pytest.raises(StorageError):
            await store.hit([RateRule("r", "k", 3, 60)], T0)

        server = _start_server(port, tmp_path)
        await _until_up(store)  # the same store object: its pool reconnects
        # Without persistence everything is gone, and the scripts must be reloaded.
        assert await store.get_verification(v.id) is None
        w = make_v()
        await store.create_verification(w)
        assert (await store.hit([RateRule("r", "k", 3, 60)], T0)).allowed
        assert await store.approve(w.id, T0 + 1, code_hash=w.code_hash)
    finally:
        await store.aclose()
        server.kill()
        server.wait(timeout=10)


@pytest.mark.redis
async def test_closed_store_and_never_opened_store_raise(store: RedisStore, redis_url: str) -> None:
    fresh = RedisStore(redis_url)
    with pytest.raises(StorageError) as info:
        await fresh.count("k", 60, T0)
    assert str(info.value) == "redis store: count failed (store is not open)"
    await store.aclose()
    with pytest.raises(StorageError, match="not open"):
        await store.list_events(EventQuery())


@pytest.mark.redis
async def test_scripts_are_loaded_again_after_a_script_flush(store: RedisStore, raw: Any) -> None:
    """A Redis that forgot the scripts (SCRIPT FLUSH, a restart without persistence):
    the next call loads its script again and runs it once."""
    v = make_v()
    await store.create_verification(v)
    await raw.script_flush()
    assert (await store.record_attempt(v.id, 5, T0 + 1)) is not None
    got = await store.get_verification(v.id)
    assert got is not None and got.attempts == 1


@pytest.mark.redis
async def test_a_burst_beyond_the_pool_waits_for_connections(raw: Any, redis_url: str) -> None:
    """Far more concurrent operations than pooled connections: every one succeeds (none
    fails with "too many connections", which would be a 503), and the store never
    opens more connections than ``max_connections`` (counted by the server)."""
    prefix = f"ogtest-{uuid.uuid4().hex[:12]}"
    name = f"burst{uuid.uuid4().hex[:8]}"
    s = await _open(f"{redis_url}?prefix={prefix}&max_connections=4&client_name={name}")
    try:
        vs = [make_v() for _ in range(150)]
        await asyncio.gather(*(s.create_verification(v) for v in vs))
        rule = RateRule("r", "burst", 1_000, 60)
        decisions = await asyncio.gather(*(s.hit([rule], T0) for _ in range(150)))
        got = await asyncio.gather(*(s.get_verification(v.id) for v in vs))
        assert got == vs and all(d.allowed for d in decisions)
        assert await s.count("burst", 60, T0) == 150
        connections = [c for c in await raw.client_list() if c["name"] == name]
        assert len(connections) == 4  # the burst fills the pool, and never beyond it
    finally:
        await s.aclose()
        await _delete_prefix(raw, prefix)


# -- events, prefixes ---------------------------------------------------------------------


@pytest.mark.redis
async def test_events_are_capped_oldest_first(raw: Any, redis_url: str) -> None:
    prefix = f"ogtest-{uuid.uuid4().hex[:12]}"
    s = await _open(f"{redis_url}?prefix={prefix}&max_events=3")
    try:
        events = [Event(type="t", ts=T0 + i, id=f"{i:025x}") for i in range(5)]
        await s.add_events(events[:2])
        await s.add_events(events[2:])
        assert await s.list_events(EventQuery()) == events[:1:-1]
        assert await raw.zcard(f"{prefix}:{{ev}}:ts") == 3
        assert await raw.hlen(f"{prefix}:{{ev}}:data") == 3
    finally:
        await s.aclose()
        await _delete_prefix(raw, prefix)


@pytest.mark.redis
async def test_prefixes_isolate_stores(store: RedisStore, raw: Any, redis_url: str) -> None:
    prefix = f"ogtest-{uuid.uuid4().hex[:12]}"
    other = await _open(f"{redis_url}?prefix={prefix}")
    try:
        v = await _exercise(store)
        assert await other.get_verification(v.id) is None
        assert await other.list_api_keys() == []
        assert await other.list_services("AC1") == []
        assert v.id not in await dump_store(other)
        assert v.code_hash in await dump_store(store)
    finally:
        await other.aclose()
        await _delete_prefix(raw, prefix)


# -- URLs ---------------------------------------------------------------------------------


def test_urls() -> None:
    s = RedisStore("redis://:pw@127.0.0.1:6379/3?prefix=acme&max_events=10&socket_timeout=2")
    assert (s._opts.prefix, s._opts.max_events, s._opts.cluster) == ("acme", 10, False)
    assert "prefix" not in s._opts.client_url and "socket_timeout=2" in s._opts.client_url
    c = RedisStore("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001,node3/?prefix=x")
    assert c._opts.nodes == (("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379))
    assert (c._opts.username, c._opts.password, c._opts.prefix) == ("u", "p@ss", "x")
    pooled = RedisStore("redis://h/0?max_connections=7&pool_timeout=0.5&socket_timeout=2")
    assert (pooled._opts.max_connections, pooled._opts.pool_timeout) == (7, 0.5)
    assert "max_connections" not in pooled._opts.client_url
    assert RedisStore("redis+cluster://h:7000?max_connections=9")._opts.max_connections == 9
    for bad in (
        "redis+cluster://h:7000/2",
        "redis://h/0?max_events=many",
        "redis://h/0?max_connections=0",
        "redis://h/0?max_connections=lots",
        "redis://h/0?pool_timeout=0",
        "redis://h/0?pool_timeout=inf",
        "redis://h/0?pool_timeout=nan",
        "redis+cluster://h:7000?pool_timeout=1",
        "redis://h/0?prefix={x}",
        "redis+cluster://h:7000?pool=9",
        "redis+cluster://h:notaport",
    ):
        with pytest.raises(ConfigError):
            RedisStore(bad)


def test_the_urls_in_docs_redis_md_are_accepted() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "redis.md"
    urls = re.findall(r"^OTPGUARD_STORE=(\S+)", doc.read_text(), flags=re.MULTILINE)
    assert len(urls) >= 6 and any("max_connections" in u for u in urls)
    for url in urls:
        RedisStore(url)  # a ConfigError fails the test


async def test_rediss_uses_tls() -> None:
    s = RedisStore("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none")
    await s.open()
    try:
        assert issubclass(s._client.connection_pool.connection_class, SSLConnection)
    finally:
        await s.aclose()


@pytest.mark.redis_cluster
async def test_cluster_fresh_store_under_concurrent_first_commands(cluster: str) -> None:
    """Stores opened and hit at once by many tasks count exactly. (Before open()
    initialised the cluster client, a script outside pytest lost a count in about one
    trial in three; this test did not reproduce that reliably: it guards, not proves.)"""
    for _ in range(10):
        setup = await _open(cluster)
        v = make_v()
        await setup.create_verification(v)
        outcomes: list[str] = []
        for _ in range(3):
            s = await _open(cluster)
            try:
                tickets = await asyncio.gather(*(s.record_attempt(v.id, 5, T0) for _ in range(8)))
            finally:
                await s.aclose()
            outcomes += [t.outcome.value for t in tickets if t is not None]
        after = await setup.get_verification(v.id)
        await setup.aclose()
        assert (outcomes.count("counted"), len(outcomes)) == (5, 24)
        assert after is not None and after.attempts == 5


@pytest.mark.redis
async def test_scheduled_purge_leaves_redis_to_its_ttls(store: RedisStore) -> None:
    """Redis expires by TTL, so the maintenance job's pass does not SCAN every key:
    logically stale verifications stay until their TTL, old events go; a purge by
    hand (``otpguard purge``) still removes everything stale."""
    stale = make_v(id="VE" + "ab" * 16)
    await store.create_verification(stale)
    old_event = Event(type="verification.started", ts=T0, id=f"{int(T0 * 1000):013x}" + "0" * 12)
    await store.add_events([old_event])
    later = T0 + 10 * 86400  # long past expiry, grace and a 1-day retention
    removed = await store.scheduled_purge(later, 3600, 86400, 86400)
    assert removed == 1
    assert await store.list_events(EventQuery()) == []
    assert await store.get_verification(stale.id) == stale
    assert await store.purge(later, 3600, 86400, 86400) >= 1
    assert await store.get_verification(stale.id) is None


@pytest.mark.redis
async def test_hashes_from_before_purposes_read_as_login_codes(store: RedisStore, raw: Any) -> None:
    """A verification hash written by the release before purposes has no purpose field."""
    v = make_v()
    await store.create_verification(v)
    vkey = f"{store._opts.prefix}:{{v:{v.id}}}"
    assert await raw.hget(vkey, "purpose") == "login"
    await raw.hdel(vkey, "purpose")
    got = await store.get_verification(v.id)
    assert got is not None and (got.purpose, got.amount, got.payee) == ("login", None, None)
