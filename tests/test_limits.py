"""Rate limits: every rule's allow and refuse side, with the injected clock.

Counting is atomic in the store and fails closed; refusals happen before any
message is sent, name their ``rule`` and are recorded as events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otpguard import limits
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import InvalidRequest, RateLimited, StorageError
from otpguard.events import EventType
from otpguard.models import Status
from otpguard.phone import parse
from otpguard.service import Verifier
from otpguard.stats import load_activity
from otpguard.stores import EventQuery, store_from_url
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient

VerifierFactory = Callable[..., Any]


def wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def mobile(i: int) -> str:
    """Distinct valid GB mobiles, each in its own prefix (so no fraud rule sees a range)."""
    e164 = f"+4474{i:04d}1234"
    assert parse(e164).type == "mobile"
    return e164


def same_prefix(i: int) -> str:
    """Distinct valid GB mobiles in the one prefix +44740012."""
    return f"+44740012{i:04d}"


async def refusals(otp: Verifier) -> list[tuple[str | None, str | None]]:
    """(reason, rule) of every refusal recorded, oldest first (stored, or counted as
    repeats of their kind within a minute: refusals.py)."""
    events, _ = await load_activity(otp.store, 0, otp.clock() + 1)
    refused = [e for e in reversed(events) if e.type == EventType.REFUSED.value]
    return [(e.reason, e.rule) for e in refused for _ in range(e.count)]


async def refused_by(rule: str, call: Any) -> RateLimited:
    with pytest.raises(RateLimited) as err:
        await call
    assert err.value.rule == rule
    assert err.value.code == "rate_limited" and err.value.status == 429
    return err.value


# -- the defaults are the issue's ----------------------------------------------------


def test_defaults(settings: Settings) -> None:
    section = settings.limits
    assert section.phone == ((3, 600), (10, 86400))
    assert section.ip == ((10, 600), (50, 86400))
    assert section.network == ((30, 600),)
    assert section.failed_checks == ((10, 3600),)
    assert section.resend_cooldown == 30
    assert [limits.resend_cooldown(section, n) for n in range(1, 8)] == [
        30, 60, 120, 240, 480, 600, 600,
    ]  # fmt: skip


# -- phone ------------------------------------------------------------------------------


async def test_phone_three_per_ten_minutes(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    for _ in range(3):
        await verifier.start(UK_MOBILE, client_ip="203.0.113.7")
        clock.advance(10)
    err = await refused_by("phone", verifier.start(UK_MOBILE, client_ip="198.51.100.7"))
    assert err.retry_after == 600 - 30  # when the first send leaves the window
    assert len(outbox.sent_to(UK_MOBILE)) == 3
    await verifier.start("+447400123457", client_ip="203.0.113.7")  # another number is fine
    clock.advance(570)
    await verifier.start(UK_MOBILE, client_ip="203.0.113.7")
    assert len(outbox.sent_to(UK_MOBILE)) == 4
    assert await refusals(verifier) == [("rate_limited", "phone")]


async def test_phone_ten_per_day(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    for _ in range(10):
        await verifier.start(UK_MOBILE, client_ip="203.0.113.7")
        clock.advance(201)  # three per 600 s never fill the ten-minute window
    err = await refused_by("phone", verifier.start(UK_MOBILE, client_ip="203.0.113.7"))
    assert err.retry_after == 86400 - 10 * 201
    assert len(outbox.sent_to(UK_MOBILE)) == 10
    clock.advance(err.retry_after)
    await verifier.start(UK_MOBILE, client_ip="203.0.113.7")
    assert len(outbox.sent_to(UK_MOBILE)) == 11


async def test_every_written_form_shares_the_phone_counters(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    for raw in ("07400 123456", "+44 7400 123456", "+447400123456"):
        await verifier.start(raw)
    for raw in ("0044 7400 123456", "(07400) 123-456"):
        await refused_by("phone", verifier.start(raw))
    assert len(outbox.sent_to(UK_MOBILE)) == 3


# -- resend cooldown ----------------------------------------------------------------------


async def test_resend_cooldown_grows(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(limit_phone="20/10m") as otp:
        v = await otp.start(UK_MOBILE)
        for wait in (30, 60, 120, 240):
            err = await refused_by("cooldown", otp.resend(v.id))
            assert err.retry_after == wait
            clock.advance(wait - 1)
            err = await refused_by("cooldown", otp.resend(v.id))
            assert err.retry_after == 1
            clock.advance(1)
            v = await otp.resend(v.id)
        assert v.sends == 5 and len(outbox.sent_to(UK_MOBILE)) == 5
        assert await refusals(otp) == [("rate_limited", "cooldown")] * 8


async def test_resends_count_against_the_phone_limit(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE)
    clock.advance(30)
    await verifier.resend(v.id)
    clock.advance(60)
    await verifier.resend(v.id)
    clock.advance(120)
    await refused_by("phone", verifier.resend(v.id))
    assert len(outbox.sent_to(UK_MOBILE)) == 3
    assert (await verifier.get(v.id)).sends == 3


# -- client IP and network ------------------------------------------------------------------


async def test_ip_ten_per_ten_minutes(verifier: Verifier, clock: ManualClock) -> None:
    for i in range(10):
        await verifier.start(mobile(i), client_ip="203.0.113.7")
    await refused_by("ip", verifier.start(mobile(10), client_ip="203.0.113.7"))
    await verifier.start(mobile(11), client_ip="203.0.113.8")  # same /24, other address
    clock.advance(600)
    await verifier.start(mobile(12), client_ip="203.0.113.7")
    assert await refusals(verifier) == [("rate_limited", "ip")]


async def test_ip_fifty_per_day(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    for i in range(50):
        v = await verifier.start(mobile(i), client_ip="203.0.113.7")
        # Real users type their codes (else the conversion watch would step in first).
        assert (await verifier.check(outbox.last_code(), verification_id=v.id)).valid
        clock.advance(61)  # ten per 610 s never fill the ten-minute window
    err = await refused_by("ip", verifier.start(mobile(50), client_ip="203.0.113.7"))
    assert err.retry_after == 86400 - 50 * 61
    await verifier.start(mobile(51), client_ip="198.51.100.7")


async def test_ip_forms_share_counters(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(limit_ip="2/10m") as otp:
        await otp.start(mobile(0), client_ip="203.0.113.7")
        await otp.start(mobile(1), client_ip="::ffff:203.0.113.7")  # IPv4-mapped IPv6
        await refused_by("ip", otp.start(mobile(2), client_ip=" 203.0.113.7 "))


async def test_ipv6_counts_per_64(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(limit_ip="2/10m") as otp:
        await otp.start(mobile(0), client_ip="2001:db8:0:1::1")
        await otp.start(mobile(1), client_ip="2001:db8:0:1::2")
        await refused_by("ip", otp.start(mobile(2), client_ip="2001:db8:0:1:ffff::3"))
        await otp.start(mobile(3), client_ip="2001:db8:0:2::1")  # the next /64


async def test_network_thirty_per_ten_minutes(verifier: Verifier, clock: ManualClock) -> None:
    for i in range(30):
        await verifier.start(mobile(i), client_ip=f"203.0.113.{i % 15}")
    err = await refused_by("network", verifier.start(mobile(30), client_ip="203.0.113.200"))
    assert err.retry_after == 600
    await verifier.start(mobile(31), client_ip="203.0.114.1")  # the next /24
    clock.advance(600)
    await verifier.start(mobile(32), client_ip="203.0.113.200")


async def test_ipv6_networks_are_56(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(limit_network="2/10m") as otp:
        await otp.start(mobile(0), client_ip="2001:db8:0:1::1")
        await otp.start(mobile(1), client_ip="2001:db8:0:ff::1")
        await refused_by("network", otp.start(mobile(2), client_ip="2001:db8:0:aa::1"))
        await otp.start(mobile(3), client_ip="2001:db8:0:100::1")  # the next /56


def test_networks() -> None:
    assert limits.network_of("203.0.113.77") == "203.0.113.0/24"
    assert limits.network_of("2001:db8:1:2ff:1::1") == "2001:db8:1:200::/56"
    assert limits.network_of("unknown") == "unknown"
    assert limits.ip_key("2001:db8::1") == "2001:db8::/64"
    assert limits.ip_key("203.0.113.77") == "203.0.113.77"
    assert limits.normalize_ip("::ffff:203.0.113.7") == "203.0.113.7"
    assert limits.normalize_ip("fe80::1%eth0") == "fe80::1"
    assert limits.normalize_ip(None) == limits.normalize_ip("") == "unknown"
    for bad in ("999.1.1.1", "unknown", "203.0.113.0/24", "x" * 65, ["203.0.113.7"]):
        for _ in range(2):  # the parsed addresses are cached; a refusal never is
            with pytest.raises(InvalidRequest):
                limits.normalize_ip(bad)  # type: ignore[arg-type]  # a list, as JSON may send
    assert limits.normalize_ip(" 203.0.113.7") == limits.normalize_ip("::ffff:203.0.113.7")


# -- the unknown bucket ---------------------------------------------------------------------


async def test_missing_client_ip_counts_under_unknown(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    for i in range(10):
        await verifier.start(mobile(i))
    await refused_by("ip", verifier.start(mobile(10)))
    assert len(outbox.outbox) == 10
    events = await verifier.store.list_events(EventQuery(limit=1000))
    assert events and {e.client_ip for e in events} == {"unknown"}
    unknown = await verifier.store.list_events(EventQuery(client_ip="unknown", limit=1000))
    assert len(unknown) == len(events)
    assert sum(e.type == EventType.SENT.value for e in unknown) == 10


async def test_checks_without_client_ip_are_visible_as_unknown(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE, client_ip="203.0.113.7")
    await verifier.check(wrong(outbox.last_code()), verification_id=v.id)
    [failed] = await verifier.store.list_events(EventQuery(types=(EventType.CHECK_FAILED.value,)))
    assert failed.client_ip == "unknown"


# -- prefix, country, global ------------------------------------------------------------------


NO_BLOCK_ADMISSION = {f"admission_block_{d}": "off" for d in (4, 5, 6)}


async def test_prefix_hard_cap(verifier_factory: VerifierFactory, clock: ManualClock) -> None:
    """The prefix cap on all sends is an opt-in (admission judges number blocks by
    default, tests/test_admission.py); set, it counts every send to the prefix."""
    async with verifier_factory(limit_prefix="20/10m;100/24h", **NO_BLOCK_ADMISSION) as otp:
        # One IP per number, each in its own network: only the prefix rule sees them all.
        for i in range(20):
            await otp.start(same_prefix(i), client_ip=f"10.{i}.0.1")
        err = await refused_by("prefix", otp.start(same_prefix(20), client_ip="10.20.0.1"))
        assert err.retry_after == 600
        await otp.start("+447400130000", client_ip="10.21.0.1")  # the neighbouring prefix
        clock.advance(600)
        await otp.start(same_prefix(20), client_ip="10.20.0.1")


async def test_country(verifier_factory: VerifierFactory, clock: ManualClock) -> None:
    async with verifier_factory(limit_country="3/10m", allowed_countries=["GB", "JE"]) as otp:
        for i in range(3):
            await otp.start(mobile(i), client_ip=f"10.{i}.0.1")
        await refused_by("country", otp.start(mobile(3), client_ip="10.3.0.1"))
        await otp.start("+447797712345", client_ip="10.4.0.1")  # Jersey counts on its own
        clock.advance(600)
        await otp.start(mobile(3), client_ip="10.3.0.1")


async def test_global_per_minute_and_per_day(
    verifier_factory: VerifierFactory, clock: ManualClock
) -> None:
    async with verifier_factory(limit_global="2/1m;3/24h", allowed_countries=["GB", "JE"]) as otp:
        await otp.start(mobile(0), client_ip="10.0.0.1")
        await otp.start("+447797712345", client_ip="10.1.0.1")
        err = await refused_by("global", otp.start(mobile(2), client_ip="10.2.0.1"))
        assert err.retry_after == 60
        clock.advance(60)
        await otp.start(mobile(2), client_ip="10.2.0.1")
        err = await refused_by("global", otp.start(mobile(3), client_ip="10.3.0.1"))
        assert err.retry_after == 86400 - 60


async def test_refusal_is_all_or_nothing(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    """A send refused by one rule uses up no other rule's room."""
    async with verifier_factory(limit_ip="1/10m") as otp:
        await otp.start(mobile(0), client_ip="203.0.113.7")
        for _ in range(5):
            await refused_by("ip", otp.start(UK_MOBILE, client_ip="203.0.113.7"))
        for _ in range(3):  # the phone rule counted none of the refused starts
            await otp.start(UK_MOBILE, client_ip=f"198.51.{_}.7")
        assert len(outbox.sent_to(UK_MOBILE)) == 3


# -- failed checks ----------------------------------------------------------------------------


async def test_failed_checks_per_number_across_verifications(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    for _ in range(2):  # two verifications, five wrong codes each: locked both times
        v = await verifier.start(UK_MOBILE)
        code = outbox.last_code(UK_MOBILE)
        for _ in range(5):
            assert not (await verifier.check(wrong(code), verification_id=v.id)).valid
        assert (await verifier.get(v.id)).status is Status.MAX_ATTEMPTS_REACHED
    clock.advance(100)
    v = await verifier.start(UK_MOBILE)  # a new code does not reset the count
    code = outbox.last_code(UK_MOBILE)
    err = await refused_by("failed_checks", verifier.check(code, verification_id=v.id))
    assert err.retry_after == 3600 - 100
    await refused_by("failed_checks", verifier.check(code, to="07400 123456"))
    v = await verifier.get(v.id)
    assert (v.status, v.attempts) == (Status.PENDING, 0)  # refused before counting
    # Another number is not affected.
    other = await verifier.start("+447400123457")
    assert (await verifier.check(outbox.last_code("+447400123457"), verification_id=other.id)).valid
    clock.advance(3500)
    v = await verifier.start(UK_MOBILE)
    assert (await verifier.check(outbox.last_code(UK_MOBILE), verification_id=v.id)).valid
    assert await refusals(verifier) == [("rate_limited", "failed_checks")] * 2


async def test_nine_failed_checks_still_allow_the_right_code(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code(UK_MOBILE)
    for _ in range(5):
        await verifier.check(wrong(code), verification_id=v.id)
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code(UK_MOBILE)
    for _ in range(4):
        await verifier.check(wrong(code), verification_id=v.id)
    assert (await verifier.check(code, verification_id=v.id)).valid


async def test_failed_checks_per_client_ip(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    attacker = "203.0.113.66"
    for i in range(6):  # thirty wrong codes over six numbers: no number reaches ten
        v = await verifier.start(mobile(i), client_ip="198.51.100.1")
        code = outbox.last_code(mobile(i))
        for _ in range(5):
            await verifier.check(wrong(code), verification_id=v.id, client_ip=attacker)
    victim = await verifier.start(mobile(6), client_ip="198.51.100.1")
    code = outbox.last_code(mobile(6))
    err = await refused_by(
        "failed_checks", verifier.check(code, verification_id=victim.id, client_ip=attacker)
    )
    assert err.retry_after == 3600
    r = await verifier.check(code, verification_id=victim.id, client_ip="198.51.100.1")
    assert r.valid


# -- fail closed --------------------------------------------------------------------------------


async def test_store_down_nothing_sent_nothing_passes(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    tmp_path: Path,
) -> None:
    settings = settings_factory(store=f"sqlite:///{tmp_path}/down.db")
    otp = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
    await otp.open()
    v = await otp.start(UK_MOBILE)
    code = outbox.last_code(UK_MOBILE)
    await otp.store.aclose()
    with pytest.raises(StorageError):
        await otp.start("+447400123457")
    with pytest.raises(StorageError):
        await otp.check(code, verification_id=v.id)
    with pytest.raises(StorageError):
        await otp.check(code, to=UK_MOBILE)
    with pytest.raises(StorageError):
        await otp.resend(v.id)
    assert [m.to for m in outbox.outbox] == [UK_MOBILE]
    await otp.store.open()
    try:
        assert (await otp.get(v.id)).status is Status.PENDING  # nothing passed
    finally:
        await otp.aclose()


# -- concurrency ---------------------------------------------------------------------------------


async def test_fifty_simultaneous_starts_send_exactly_three(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    tmp_path: Path,
) -> None:
    settings = settings_factory(store=f"sqlite:///{tmp_path}/x.db")
    async with Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock) as otp:
        results = await asyncio.gather(
            *(otp.start(UK_MOBILE, client_ip=f"10.{i}.0.1") for i in range(50)),
            return_exceptions=True,
        )
        sent = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, RateLimited)]
        assert len(sent) == 3 and len(refused) == 47
        assert {r.rule for r in refused} == {"phone"}
        assert len(outbox.outbox) == 3
        assert await refusals(otp) == [("rate_limited", "phone")] * 47


async def test_concurrent_starts_over_one_ip_hold_the_ip_limit(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    tmp_path: Path,
) -> None:
    settings = settings_factory(store=f"sqlite:///{tmp_path}/x.db")
    async with Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock) as otp:
        results = await asyncio.gather(
            *(otp.start(mobile(i), client_ip="203.0.113.7") for i in range(40)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 10
        assert {r.rule for r in results if isinstance(r, RateLimited)} == {"ip"}
        assert len(outbox.outbox) == 10


# -- the HTTP shape ------------------------------------------------------------


async def test_http_429_names_the_rule_and_the_wait(
    api: ApiClient, outbox: MemoryTransport, clock: ManualClock
) -> None:
    for _ in range(3):
        r = await api.post("/v1/verifications", json={"to": "07400 123456"})
        assert r.status_code == 201
        clock.advance(100)
    r = await api.post("/v1/verifications", json={"to": "+44 7400 123456"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "300"
    err = r.json()["error"]
    assert (err["code"], err["rule"], err["retry_after"]) == ("rate_limited", "phone", 300)
    assert "message" in err
    for code in {m.code for m in outbox.outbox}:
        assert code not in r.text


async def test_http_429_for_ip_and_failed_checks(
    api: ApiClient, outbox: MemoryTransport, clock: ManualClock
) -> None:
    for i in range(10):
        r = await api.post("/v1/verifications", json={"to": mobile(i), "client_ip": "203.0.113.7"})
        assert r.status_code == 201
    r = await api.post("/v1/verifications", json={"to": mobile(10), "client_ip": "203.0.113.7"})
    assert (r.status_code, r.json()["error"]["rule"]) == (429, "ip")
    assert r.headers["retry-after"] == "600"

    ids = []
    for _ in range(2):
        clock.advance(1)
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE, "client_ip": "10.0.0.1"})
        ids.append(r.json()["id"])
        code = outbox.last_code(UK_MOBILE)
        for _ in range(5):
            body = {"id": ids[-1], "code": wrong(code)}
            assert (await api.post("/v1/verifications/check", json=body)).status_code == 200
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE, "client_ip": "10.0.0.1"})
    code = outbox.last_code(UK_MOBILE)
    r = await api.post("/v1/verifications/check", json={"id": r.json()["id"], "code": code})
    assert r.status_code == 429
    err = r.json()["error"]
    assert (err["code"], err["rule"]) == ("rate_limited", "failed_checks")
    assert r.headers["retry-after"] == str(err["retry_after"]) == "3599"
    assert code not in r.text
