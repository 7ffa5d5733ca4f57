"""The Verifier's methods for the shells: records and their lock, API keys, counts."""

from __future__ import annotations

import pytest

from otpguard.clock import ManualClock
from otpguard.errors import Unauthorized
from otpguard.events import EventType
from otpguard.models import RateRule
from otpguard.service import Verifier
from otpguard.stores.base import EventQuery
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE


async def test_a_record_lives_until_its_time_and_is_dropped_now(
    verifier: Verifier, clock: ManualClock
) -> None:
    await verifier.keep_record("shell:a", "1", clock() + 60)
    await verifier.keep_record("shell:b", "2", clock() + 600)
    assert await verifier.record("shell:a") == "1"
    assert await verifier.records(["shell:a", "shell:b", "shell:c"]) == {
        "shell:a": "1",
        "shell:b": "2",
    }
    assert await verifier.records([]) == {}
    clock.advance(61)
    assert await verifier.record("shell:a") is None
    await verifier.drop_record("shell:b", "2")
    assert await verifier.record("shell:b") is None


async def test_the_lock_is_held_once_and_given_back_even_on_an_error(
    verifier: Verifier, clock: ManualClock
) -> None:
    async with verifier.locked("shell_lock", "shell:lock", 10) as held:
        assert held
        async with verifier.locked("shell_lock", "shell:lock", 10) as again:
            assert not again  # another writer holds it
    with pytest.raises(RuntimeError):
        async with verifier.locked("shell_lock", "shell:lock", 10) as held:
            assert held  # given back when the first block ended
            raise RuntimeError("a writer fails halfway")
    clock.advance(1)
    async with verifier.locked("shell_lock", "shell:lock", 10) as held:
        assert held  # given back when the failing block ended


async def test_a_crashed_holders_lock_lapses_with_its_window(
    verifier: Verifier, clock: ManualClock
) -> None:
    # A holder that never gave the lock back: its entry, taken straight on the store.
    taken = await verifier.store.hit([RateRule("shell_lock", "shell:lock", 1, 10)], clock())
    assert taken.allowed
    async with verifier.locked("shell_lock", "shell:lock", 10) as held:
        assert not held
    clock.advance(11)
    async with verifier.locked("shell_lock", "shell:lock", 10) as held:
        assert held


async def test_api_keys_are_created_listed_authenticated_and_revoked(
    verifier: Verifier,
) -> None:
    record, key = await verifier.create_api_key("shell", ("monitor",))
    assert (await verifier.authenticate(key)).id == record.id
    assert await verifier.api_key(record.id) == record
    assert record.id in {k.id for k in await verifier.api_keys()}
    assert await verifier.revoke_api_key(record.id)
    with pytest.raises(Unauthorized):
        await verifier.authenticate(key)
    with pytest.raises(Unauthorized):
        await verifier.authenticate(None)


async def test_events_and_counts_are_read_through_the_verifier(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE, client_ip="198.51.100.7")
    started = await verifier.events(EventQuery(types=(EventType.STARTED.value,)))
    assert [e.verification_id for e in started] == [v.id]
    counts = await verifier.event_counts(clock() - 60, clock() + 1, ("t",))
    assert sum(c.count for c in counts) >= 2  # started and sent
    stats = await verifier.stats(3600)
    assert stats.totals["started"] == 1
    assert stats.until > clock() >= stats.since
    await verifier.store.hit([RateRule("shell", "shell:count", 10, 60)], clock())
    assert await verifier.recent_count("shell:count", 60) == 1
    assert await verifier.recent_count("shell:count", 60, now=clock() + 120) == 0
    await verifier.health()
