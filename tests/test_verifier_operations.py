"""The Verifier's methods for the shells: records of before, sign-outs, API keys, counts."""

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


async def test_records_of_before_are_read_while_they_live(
    verifier: Verifier, clock: ManualClock
) -> None:
    await verifier.store.set_flag("shell:a", "1", clock() + 60)
    await verifier.store.set_flag("shell:b", "2", clock() + 600)
    assert await verifier.records(["shell:a", "shell:b", "shell:c"]) == {
        "shell:a": "1",
        "shell:b": "2",
    }
    assert await verifier.records([]) == {}
    clock.advance(61)
    assert await verifier.records(["shell:a", "shell:b"]) == {"shell:b": "2"}


async def test_a_sign_out_lasts_until_its_time(verifier: Verifier, clock: ManualClock) -> None:
    assert not await verifier.signed_out("nonce")
    await verifier.sign_out("nonce", clock() + 60)
    assert await verifier.signed_out("nonce") and not await verifier.signed_out("other")
    clock.advance(60)
    assert not await verifier.signed_out("nonce")


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
