"""The email channel through the Verifier: start, check by id and by address, resend;
per-mailbox and per-domain limits; the domain's admission bucket and its refund;
disposable, allowed and MX-less domains; the development guard; phone-only guards
that pass an address by, and email rules that pass a number by.

Codes are read from the memory outbox, as a mailbox would receive them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import DestinationRefused, InvalidRequest, NotFound, RateLimited
from otpguard.events import EventType
from otpguard.models import PHONE_CHANNELS, Channel, Status
from otpguard.service import Verifier
from otpguard.stats import stats_for
from otpguard.stores import EventQuery, store_from_url
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE

VerifierFactory = Callable[..., Any]
OFF = "off"
LOOSE = {"limit_ip": OFF, "limit_network": OFF, "limit_email": OFF}


def lone_ip(i: int) -> str:
    return f"10.{(i // 250) % 250}.{i % 250}.1"


async def outcome(otp: Verifier, to: str, ip: str = "203.0.113.9", **kw: Any) -> str:
    try:
        await otp.start(to, Channel.EMAIL, client_ip=ip, **kw)
    except RateLimited as exc:
        return f"rate_limited:{exc.rule}"
    except DestinationRefused as exc:
        return exc.reason
    return "sent"


async def test_start_check_resend(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory() as otp:
        v = await otp.start("  Jo.Smith@Example.COM ", "email", client_ip="203.0.113.9")
        assert (v.to, v.channel, v.country, v.status) == (
            "jo.smith@example.com", Channel.EMAIL, None, Status.PENDING,
        )  # fmt: skip
        [msg] = outbox.sent_to("jo.smith@example.com")
        assert msg.channel is Channel.EMAIL
        clock.advance(31)
        again = await otp.resend(v.id)
        assert again.sends == 2
        old, new = (m.code for m in outbox.sent_to(v.to))
        assert not (await otp.check(old, verification_id=v.id)).valid
        result = await otp.check(new, to="JO.SMITH@example.com")  # by address, any case
        assert result.valid and result.verification.id == v.id


async def test_check_by_address_fails_like_any_other(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory() as otp:
        with pytest.raises(NotFound):
            await otp.check("123456", to="nobody@example.com")
        with pytest.raises(InvalidRequest):
            await otp.check("123456", to="not an address@")


async def test_events_never_hold_the_address(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with verifier_factory() as otp:
        v = await otp.start("john.doe@mail.example.com", "email", client_ip="203.0.113.9")
        code = outbox.last_code()
        await otp.check(code[:-1] + str((int(code[-1]) + 1) % 10), verification_id=v.id)
        await otp.check(code, verification_id=v.id)
        with pytest.raises(DestinationRefused):
            await otp.start("john.doe@mailinator.com", "email")
        events = await otp.store.list_events(EventQuery(limit=100))
    types = {e.type for e in events}
    assert {EventType.SENT.value, EventType.CHECK_FAILED.value, EventType.CHECK_PASSED.value,
            EventType.REFUSED.value} <= types  # fmt: skip
    for e in events:
        blob = e.to_json()
        assert "john.doe" not in blob and "mail.example" not in blob and "mailinator" not in blob
    assert {e.number_masked for e in events if e.verification_id} == {"j***@m***.com"}
    assert "john.doe" not in caplog.text and outbox.last_code() not in caplog.text


async def test_limit_per_mailbox_counts_plus_tags_as_one(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(limit_email="2/10m", limit_ip=OFF, limit_network=OFF) as otp:
        got = [await outcome(otp, f"jo+{i}@example.com") for i in range(3)]
        assert got == ["sent", "sent", "rate_limited:email"]
        assert await outcome(otp, "al@example.com") == "sent"


async def test_limit_per_domain(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(limit_email_domain="3/10m", **LOOSE) as otp:
        got = [await outcome(otp, f"u{i}@corp.example", lone_ip(i)) for i in range(4)]
        assert got == ["sent"] * 3 + ["rate_limited:email_domain"]
        assert await outcome(otp, "u9@other.example") == "sent"


async def test_concurrent_starts_to_one_mailbox_are_limited_exactly(
    verifier_factory: VerifierFactory,
) -> None:
    async with verifier_factory(limit_email="3/10m", limit_ip=OFF, limit_network=OFF) as otp:
        got = await asyncio.gather(
            *(outcome(otp, f"jo+{i}@example.com", lone_ip(i)) for i in range(12))
        )
    assert sorted(got).count("sent") == 3 and got.count("rate_limited:email") == 9


async def test_domain_admission_bucket_and_its_refund(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(
        admission_email_domain="3/10m", admission_global="1000/10m", **LOOSE
    ) as otp:
        got = [await outcome(otp, f"u{i}@pumped.example", lone_ip(i)) for i in range(4)]
        assert got == ["sent"] * 3 + ["rate_limited:domain"]
        assert await outcome(otp, "u1@fine.example") == "sent"  # another domain's own bucket
        # A conversion gives its send back (and earns room): the domain is admitted again.
        result = await otp.check(outbox.last_code("u0@pumped.example"), to="u0@pumped.example")
        assert result.valid
        assert await outcome(otp, "u5@pumped.example", lone_ip(5)) == "sent"
        refused = await otp.store.list_events(EventQuery(types=(EventType.REFUSED.value,)))
    assert refused and refused[0].details.get("scope") == "domain pumped.example"


async def test_domain_policy(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(email_allowed_domains=["corp.example"]) as otp:
        assert await outcome(otp, "a@corp.example") == "sent"
        assert await outcome(otp, "a@gmail.com") == "domain_not_allowed"
    async with verifier_factory() as otp:
        assert await outcome(otp, "a@yopmail.com") == "disposable_domain"
    async with verifier_factory(email_refuse_disposable=False) as otp:
        assert await outcome(otp, "a@yopmail.com") == "sent"


class Resolver:
    async def mail_exchangers(self, domain: str) -> list[str] | None:
        return ["mx.mail.example"] if domain == "mail.example" else []


async def test_mx_check_through_the_engine(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    settings = settings_factory(email_require_mx=True)
    otp = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock,
                   mx_resolver=Resolver())  # fmt: skip
    async with otp:
        assert await outcome(otp, "a@mail.example") == "sent"
        assert await outcome(otp, "a@nomail.example") == "no_mx"
    assert [m.to for m in outbox.outbox if m.channel is Channel.EMAIL] == ["a@mail.example"]


class RealMailbox(MemoryTransport):
    """A transport that reaches real mailboxes (as SMTP and SendGrid do)."""

    reaches_real_phones = True
    channels = frozenset({Channel.EMAIL})


async def test_development_guard_for_email(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    for env, listed, expect in (
        ("development", [], ["sent", "sent", "development_guard", "development_guard"]),
        ("development", ["Real@Gmail.com"], ["sent", "sent", "sent", "development_guard"]),
        ("development", ["@gmail.com"], ["sent", "sent", "sent", "sent"]),
    ):
        settings = settings_factory(env=env, dev_allowed_emails=listed)
        otp = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock,
                       email_transport=RealMailbox())  # fmt: skip
        async with otp:
            got = [
                await outcome(otp, to, lone_ip(i))
                for i, to in enumerate(
                    ["a@example.com", "b@dev.test", "real@gmail.com", "other@gmail.com"]
                )
            ]
        assert got == expect, listed


class RealPhones(MemoryTransport):
    """A phone transport other than Twilio that reaches real phones (a plug-in's)."""

    reaches_real_phones = True
    channels = PHONE_CHANNELS


async def test_development_guard_names_any_transport_that_reaches_real_phones(
    settings_factory: Callable[..., Settings], clock: ManualClock
) -> None:
    settings = settings_factory(env="development")
    otp = Verifier(settings, store_from_url(settings.store_url), RealPhones(), clock=clock)
    async with otp:
        with pytest.raises(DestinationRefused) as exc:
            await otp.start(UK_MOBILE, client_ip="203.0.113.9")
    assert exc.value.reason == "development_guard"
    assert "a transport that reaches real phones" in exc.value.message
    assert "OTPGUARD_DEV_ALLOWED_NUMBERS" in exc.value.message


class PhoneOnly(MemoryTransport):
    channels = PHONE_CHANNELS


async def test_email_needs_a_transport_that_carries_it(
    settings_factory: Callable[..., Settings], clock: ManualClock
) -> None:
    settings = settings_factory()
    phone = PhoneOnly()
    async with Verifier(settings, store_from_url(settings.store_url), phone, clock=clock) as otp:
        with pytest.raises(InvalidRequest) as err:
            await otp.start("a@example.com", "email")
        assert "OTPGUARD_EMAIL_TRANSPORT" in err.value.message
        await otp.start(UK_MOBILE, "sms")
    email = RealMailbox()
    async with Verifier(settings, store_from_url(settings.store_url), phone, clock=clock,
                        email_transport=email) as otp:  # fmt: skip
        await otp.start("a@example.com", "email")
        await otp.start(UK_MOBILE, "sms")
    assert [m.channel for m in email.outbox] == [Channel.EMAIL]
    assert [m.channel for m in phone.outbox] == [Channel.SMS, Channel.SMS]


async def test_phone_rules_pass_an_address_by_and_email_rules_a_number(
    verifier_factory: VerifierFactory,
) -> None:
    async with verifier_factory(
        allowed_countries=["FR"],
        fraud_sequential_threshold=2,
        limit_email=OFF,
        limit_country="1/10m",
        limit_prefix="1/10m",
        fraud_budget_country="1/10m",
    ) as otp:
        # Many addresses of one domain from one IP: no sequential-numbers refusal, no
        # country (GB is not even allowed here), no prefix or country caps.
        got = [await outcome(otp, f"u{i}@same.example") for i in range(4)]
        assert got == ["sent"] * 4
    async with verifier_factory(limit_email="1/10m", limit_email_domain="1/10m") as otp:
        assert await outcome(otp, "a@example.com") == "sent"
        # The email rules never count a number.
        await otp.start(UK_MOBILE, "sms", client_ip="198.51.100.7")
        await otp.start("+447400123457", "sms", client_ip="198.51.100.8")
        assert await outcome(otp, "a@example.com") == "rate_limited:email"


async def test_stats_count_email_apart_and_price_it_at_nothing(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(price_table={"GB": 0.04}, default_price=0.05) as otp:
        for i in range(3):
            await otp.start(f"u{i}@example.com", "email", client_ip=lone_ip(i))
        await otp.check(outbox.last_code("u0@example.com"), to="u0@example.com")
        await otp.start(UK_MOBILE, "sms", client_ip="198.51.100.7")
        stats = await stats_for(otp.store, otp.settings.alerts, clock() + 1, 3600)
    rows = {c.country: c for c in stats.countries}
    assert (rows["email"].started, rows["email"].approved, rows["email"].sends) == (3, 1, 3)
    assert rows["email"].spend == 0 and "unknown" not in rows
    assert stats.spend == pytest.approx(0.04)
    assert stats.as_dict()["sends_by_channel"] == {"email": 3, "sms": 1}


async def test_conversion_watch_suspends_a_domain(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(
        fraud_suspend_on_low_conversion=True, fraud_conversion_min_sends=3,
        fraud_conversion_min_rate=0.5, fraud_observation_window=10, **LOOSE,
    ) as otp:  # fmt: skip
        await otp.start("fan@bad.example", "email", client_ip=lone_ip(99))
        await otp.check(outbox.last_code("fan@bad.example"), to="fan@bad.example")
        got = [await outcome(otp, f"u{i}@bad.example", lone_ip(i)) for i in range(3)]
        clock.advance(11)  # the sends are judged once older than the observation window
        got += [await outcome(otp, "u3@bad.example", lone_ip(3))]  # judged: 1 of 4, suspended
        got += [await outcome(otp, "u4@bad.example", lone_ip(4))]
        assert got == ["sent"] * 4 + ["fraud:low_conversion"]
        assert await outcome(otp, "u5@good.example", lone_ip(5)) == "sent"
        assert await outcome(otp, "fan@bad.example", lone_ip(6)) == "sent"  # trusted: converted
        suspended = await otp.store.list_events(
            EventQuery(types=(EventType.FRAUD_SUSPENDED.value,))
        )
    assert [e.details["subject"] for e in suspended] == ["domain bad.example"]


async def test_a_converted_address_is_trusted_past_its_domain_bucket(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(admission_email_domain="2/10m", **LOOSE) as otp:
        await otp.start("me@busy.example", "email", client_ip=lone_ip(0))
        await otp.check(outbox.last_code("me@busy.example"), to="me@busy.example")
        got = [await outcome(otp, f"u{i}@busy.example", lone_ip(i)) for i in range(1, 5)]
        clock.advance(31)
        got.append(await outcome(otp, "me@busy.example", lone_ip(9)))
    assert got == ["sent"] * 2 + ["rate_limited:domain"] * 2 + ["sent"]


async def test_admin_events_by_address(
    settings_factory: Callable[..., Settings], api_factory: Callable[..., Any]
) -> None:
    async with api_factory(settings_factory(), scopes=("verify", "admin")) as api:
        for to in ("jo@example.com", "al@example.com"):
            r = await api.post("/v1/verifications", json={"to": to, "channel": "email"})
            assert r.status_code == 201
        r = await api.get("/v1/admin/events", params={"number": " JO@Example.com"})
        assert r.status_code == 200, r.text
        events = r.json()["events"]
    assert events and {e["number_masked"] for e in events} == {"j***@e***.com"}
    assert all("jo@example.com" not in str(e) for e in events)
