"""The block and allow lists' storage contract (``Store.put_list_entry`` and friends),
run against every backend in ``conftest.STORE_URLS``. Time is passed as ``now``."""

from __future__ import annotations

import asyncio

import pytest

from otpguard.numberlists import FOREVER, ListEntry, NumberListFull, blocked_by, flag_keys
from otpguard.stores import Store

from ..dump import dump_store

T0 = 1_800_000_000.0
NUMBER = "+447400123456"


def entry(pattern: str, kind: str = "block", *, at: float = T0, expires: float | None = None,
          note: str = "") -> ListEntry:  # fmt: skip
    return ListEntry(pattern, kind, note, "cli (ops)", at, expires)  # type: ignore[arg-type]


async def test_an_entry_is_a_flag_the_send_path_reads(store: Store) -> None:
    assert await store.put_list_entry(entry("+447400", note="abuse ticket 12"), T0, 10) is None
    flags = await store.get_flags(flag_keys(NUMBER), T0)
    assert list(flags) == ["numlist:+447400"]
    found = blocked_by(flags, NUMBER)
    assert found == entry("+447400", note="abuse ticket 12")
    other = "+447500123456"
    assert blocked_by(await store.get_flags(flag_keys(other), T0), other) is None


async def test_list_count_and_replace(store: Store) -> None:
    await store.put_list_entry(entry("+447400", at=T0), T0, 10)
    await store.put_list_entry(entry(NUMBER, "allow", at=T0 + 1), T0 + 1, 10)
    await store.put_list_entry(entry("+3361", at=T0 + 1), T0 + 1, 10)
    listed = await store.list_entries(T0 + 2)
    assert [(x.pattern, x.kind) for x in listed] == [
        ("+3361", "block"), (NUMBER, "allow"), ("+447400", "block"),
    ]  # fmt: skip
    assert await store.count_list_entries(T0 + 2) == {"block": 2, "allow": 1}
    replaced = await store.put_list_entry(entry(NUMBER, "block", at=T0 + 3), T0 + 3, 10)
    assert replaced == entry(NUMBER, "allow", at=T0 + 1)
    assert await store.count_list_entries(T0 + 3) == {"block": 3, "allow": 0}
    assert [x.kind for x in await store.list_entries(T0 + 3) if x.pattern == NUMBER] == ["block"]


async def test_expiry_by_now(store: Store) -> None:
    await store.put_list_entry(entry(NUMBER, expires=T0 + 60), T0, 10)
    await store.put_list_entry(entry("+447400"), T0, 10)  # no expiry
    keys = flag_keys(NUMBER)
    assert set(await store.get_flags(keys, T0 + 59.5)) == {"numlist:+447400", f"numlist:{NUMBER}"}
    assert set(await store.get_flags(keys, T0 + 60)) == {"numlist:+447400"}
    assert [x.pattern for x in await store.list_entries(T0 + 60)] == ["+447400"]
    assert await store.count_list_entries(T0 + 60) == {"block": 1, "allow": 0}
    assert [x.pattern for x in await store.list_entries(FOREVER - 1)] == ["+447400"]
    # An expired entry is gone for delete too, and its pattern is free again.
    assert await store.delete_list_entry(NUMBER, T0 + 60) is None
    assert await store.put_list_entry(entry(NUMBER), T0 + 61, 10) is None


async def test_expires_at_round_trips(store: Store) -> None:
    await store.put_list_entry(entry(NUMBER, expires=T0 + 3600.25, note="ticket <b>"), T0, 10)
    (got,) = await store.list_entries(T0)
    assert got == entry(NUMBER, expires=T0 + 3600.25, note="ticket <b>")
    assert got.source == "runtime"


async def test_delete(store: Store) -> None:
    await store.put_list_entry(entry(NUMBER, "allow"), T0, 10)
    assert await store.delete_list_entry(NUMBER, T0 + 1) == entry(NUMBER, "allow")
    assert await store.delete_list_entry(NUMBER, T0 + 1) is None
    assert await store.get_flags(flag_keys(NUMBER), T0 + 1) == {}
    assert await store.list_entries(T0 + 1) == []
    assert await store.count_list_entries(T0 + 1) == {"block": 0, "allow": 0}


async def test_the_cap_counts_live_entries_and_spares_replacements(store: Store) -> None:
    await store.put_list_entry(entry("+4474", expires=T0 + 10), T0, 2)
    await store.put_list_entry(entry("+4475"), T0, 2)
    with pytest.raises(NumberListFull) as full:
        await store.put_list_entry(entry("+4476"), T0, 2)
    assert full.value.reason == "number_list_full"
    assert [x.pattern for x in await store.list_entries(T0)] == ["+4474", "+4475"]
    await store.put_list_entry(entry("+4475", "allow"), T0, 2)  # a replacement fits
    await store.put_list_entry(entry("+4476"), T0 + 10, 2)  # +4474 expired: room again
    assert await store.count_list_entries(T0 + 10) == {"block": 1, "allow": 1}


async def test_the_cap_holds_under_concurrency(store: Store) -> None:
    puts = [store.put_list_entry(entry(f"+4474{i:02d}"), T0, 5) for i in range(20)]
    results = await asyncio.gather(*puts, return_exceptions=True)
    refused = [r for r in results if isinstance(r, NumberListFull)]
    assert len(refused) == 15 and results.count(None) == 5
    assert await store.count_list_entries(T0) == {"block": 5, "allow": 0}


async def test_purge_deletes_expired_entries(store: Store) -> None:
    await store.put_list_entry(entry(NUMBER, expires=T0 + 60), T0, 10)
    await store.put_list_entry(entry("+447400"), T0, 10)
    removed = await store.purge(T0 + 60, 3600, 3600, 86_400)
    assert removed == 1
    assert NUMBER not in await dump_store(store)
    assert [x.pattern for x in await store.list_entries(T0)] == ["+447400"]


async def test_the_scheduled_purge_deletes_expired_entries_too(store: Store) -> None:
    """Entries are not freed by a TTL in any backend: the maintenance job's lighter
    purge deletes the expired ones as well."""
    await store.put_list_entry(entry(NUMBER, expires=T0 + 60), T0, 10)
    await store.put_list_entry(entry("+447400", expires=T0 + 120), T0, 10)
    assert await store.scheduled_purge(T0 + 60, 3600, 3600, 86_400) == 1
    assert NUMBER not in await dump_store(store)
    assert [x.pattern for x in await store.list_entries(T0 + 60)] == ["+447400"]
