"""API keys: creation, authentication, the short-lived cache of good keys."""

from __future__ import annotations

import pytest

from otpguard.apikeys import KeyCache, authenticate, create_api_key
from otpguard.clock import ManualClock
from otpguard.errors import InvalidRequest, Unauthorized
from otpguard.service import Verifier

from .dump import dump_store


async def test_keys_are_stored_as_digests(verifier: Verifier, clock: ManualClock) -> None:
    record, key = await create_api_key(verifier.store, "backend", ("verify",), clock())
    assert key.startswith(f"og_{record.id}_")
    assert key not in await dump_store(verifier.store)
    assert (await authenticate(verifier.store, key)).id == record.id
    for wrong in (None, "", key[:-1] + ("A" if key[-1] != "A" else "B"), "og_" + record.id):
        with pytest.raises(Unauthorized):
            await authenticate(verifier.store, wrong)


@pytest.mark.parametrize(
    ("name", "scopes"), [("", ("verify",)), ("x" * 65, ("verify",)), ("ok", ()), ("ok", ("root",))]
)
async def test_bad_key_requests(verifier: Verifier, name: str, scopes: tuple[str, ...]) -> None:
    with pytest.raises(InvalidRequest):
        await create_api_key(verifier.store, name, scopes, 0.0)


async def test_cache_remembers_good_keys_for_its_ttl_only(
    verifier: Verifier, clock: ManualClock
) -> None:
    record, key = await create_api_key(verifier.store, "backend", ("verify",), clock())
    ticks = ManualClock(start=100.0)
    cache = KeyCache(ttl=5.0, clock=ticks)
    assert (await cache.authenticate(verifier.store, key)).id == record.id
    assert await verifier.store.revoke_api_key(record.id, clock())
    ticks.advance(4.9)
    assert (await cache.authenticate(verifier.store, key)).id == record.id  # still cached
    ticks.advance(0.2)
    with pytest.raises(Unauthorized):  # the revocation has reached this instance
        await cache.authenticate(verifier.store, key)


async def test_cache_never_remembers_failures(verifier: Verifier, clock: ManualClock) -> None:
    cache = KeyCache(ttl=5.0, clock=ManualClock())
    with pytest.raises(Unauthorized):
        await cache.authenticate(verifier.store, "og_0123456789ab_" + "A" * 43)
    assert cache._hits == {}


async def test_cache_off_asks_the_store_every_time(verifier: Verifier, clock: ManualClock) -> None:
    record, key = await create_api_key(verifier.store, "backend", ("verify",), clock())
    cache = KeyCache(ttl=0.0, clock=ManualClock())
    await cache.authenticate(verifier.store, key)
    await verifier.store.revoke_api_key(record.id, clock())
    with pytest.raises(Unauthorized):
        await cache.authenticate(verifier.store, key)


@pytest.mark.parametrize("presented", [None, "", "Bearer", "og_short", "og_" + "x" * 200])
async def test_malformed_keys_never_reach_the_store(presented: str | None) -> None:
    """A malformed key is refused before any store call, so a flood of them holds no
    store connection: a store that is not open (every call a StorageError) shows it."""
    from otpguard.errors import StorageError
    from otpguard.stores import store_from_url

    closed = store_from_url("sqlite://:memory:")
    with pytest.raises(Unauthorized):
        await authenticate(closed, presented)
    with pytest.raises(Unauthorized):
        await KeyCache(5.0).authenticate(closed, presented)
    with pytest.raises(StorageError):  # a well-formed key does ask the store
        await authenticate(closed, "og_0123456789ab_" + "A" * 43)
