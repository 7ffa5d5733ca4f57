"""The Verifier and API over the twilio transport, against the fake Twilio server:
magic numbers, error mapping end to end, the development guard, status callbacks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import DeliveryError, DestinationRefused
from otpguard.models import Status
from otpguard.service import Verifier
from otpguard.stores import EventQuery, store_from_url
from otpguard.transports import transport_from_settings
from otpguard.web.app import create_app

from .conftest import TEST_KEY, UK_MOBILE
from .fake_twilio import FakeTwilio, Fault

MAGIC_ERRORS = {
    "+15005550001": (21211, "invalid_number"),
    "+15005550002": (21612, "unroutable"),
    "+15005550003": (21408, "country_not_permitted"),
    "+15005550004": (21610, "unsubscribed"),
    "+15005550009": (21614, "not_sms_capable"),
}


def engine_settings(fake: FakeTwilio, tmp_path: Path, **overrides: Any) -> Settings:
    base = fake.settings(
        store="sqlite://:memory:",
        secret_keys=[TEST_KEY],
        data_dir=tmp_path / "data",
        allowed_countries=["GB", "US"],
    )
    return base.model_copy(update=overrides)


@pytest.fixture
def test_creds_fake() -> Any:
    with FakeTwilio(test_credentials=True) as fake:
        yield fake


@pytest.fixture
def live_fake() -> Any:
    with FakeTwilio() as fake:
        yield fake


async def open_engine(settings: Settings, clock: ManualClock) -> Verifier:
    v = Verifier(
        settings, store_from_url(settings.store_url), transport_from_settings(settings), clock=clock
    )
    await v.open()
    return v


async def test_test_credentials_magic_numbers_map_to_reasons(
    test_creds_fake: FakeTwilio, tmp_path: Path, clock: ManualClock
) -> None:
    v = await open_engine(engine_settings(test_creds_fake, tmp_path), clock)
    try:
        for number, (provider_code, reason) in MAGIC_ERRORS.items():
            with pytest.raises(DeliveryError) as exc:
                await v.start(number)
            assert (exc.value.provider_code, exc.value.reason) == (provider_code, reason)
        failed = await v.store.list_events(EventQuery(types=("verification.delivery_failed",)))
        assert sorted(e.provider_code or 0 for e in failed) == sorted(
            c for c, _ in MAGIC_ERRORS.values()
        )
        for e in failed:
            assert e.verification_id is not None
            assert (await v.get(e.verification_id)).status is Status.FAILED
        # an undeliverable number is remembered: no second paid attempt right away
        requests_before = len(test_creds_fake.requests)
        with pytest.raises(DestinationRefused) as refused:
            await v.start("+15005550001")
        assert refused.value.reason == "undeliverable"
        assert len(test_creds_fake.requests) == requests_before
    finally:
        await v.aclose()


async def test_magic_numbers_from_one_ip_are_not_a_range_walk(
    test_creds_fake: FakeTwilio, tmp_path: Path, clock: ManualClock
) -> None:
    """A developer trying Twilio's six magic numbers from one machine walks one prefix
    (+1500555): that is not an attack, and every request reaches (fake) Twilio."""
    v = await open_engine(engine_settings(test_creds_fake, tmp_path), clock)
    try:
        for number in [*MAGIC_ERRORS, "+15005550006"]:
            # The magic error numbers fail as Twilio says they do.
            with contextlib.suppress(DeliveryError):
                await v.start(number, client_ip="203.0.113.66")
        assert len(test_creds_fake.requests) == len(MAGIC_ERRORS) + 1
    finally:
        await v.aclose()


async def test_magic_numbers_pass_the_policy_only_with_test_credentials(
    test_creds_fake: FakeTwilio, live_fake: FakeTwilio, tmp_path: Path, clock: ManualClock
) -> None:
    ok = await open_engine(engine_settings(test_creds_fake, tmp_path), clock)
    try:
        ver = await ok.start("+15005550006")
        code = test_creds_fake.last_code("+15005550006")
        assert (await ok.check(code, verification_id=ver.id)).valid
    finally:
        await ok.aclose()
    live = await open_engine(
        engine_settings(live_fake, tmp_path, dev_allowed_numbers=["+15005550006"]), clock
    )
    try:
        with pytest.raises(DestinationRefused) as exc:
            await live.start("+15005550006")
        assert exc.value.reason == "number_type:personal_number"
        assert live_fake.requests == []
    finally:
        await live.aclose()


async def test_development_with_live_credentials_never_texts_a_stranger(
    live_fake: FakeTwilio, tmp_path: Path, clock: ManualClock
) -> None:
    v = await open_engine(
        engine_settings(live_fake, tmp_path, dev_allowed_numbers=["07400 123457"]), clock
    )
    try:
        with pytest.raises(DestinationRefused) as exc:
            await v.start(UK_MOBILE)
        assert exc.value.reason == "development_guard"
        assert "OTPGUARD_DEV_ALLOWED_NUMBERS" in exc.value.message
        assert live_fake.requests == []
        ver = await v.start("+447400123457")  # listed: allowed
        assert live_fake.requests[-1].form["To"] == "+447400123457"
        assert (await v.check(live_fake.last_code("+447400123457"), verification_id=ver.id)).valid
    finally:
        await v.aclose()


async def test_production_has_no_development_guard(
    live_fake: FakeTwilio, tmp_path: Path, clock: ManualClock
) -> None:
    settings = engine_settings(
        live_fake, tmp_path, env="production", trusted_proxies=["10.0.0.0/8"]
    )
    v = await open_engine(settings, clock)
    try:
        await v.start(UK_MOBILE)
        assert live_fake.requests[-1].form["To"] == UK_MOBILE
    finally:
        await v.aclose()


@pytest.fixture
async def webhook_app(
    live_fake: FakeTwilio, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Verifier]]:
    settings = engine_settings(
        live_fake, tmp_path, public_url="https://otp.example.com", dev_allowed_numbers=[UK_MOBILE]
    )
    v = Verifier(
        settings, store_from_url(settings.store_url), transport_from_settings(settings), clock=clock
    )
    app = create_app(settings, v, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5:8000") as http:
            yield http, v


async def test_status_callbacks_become_events(
    webhook_app: tuple[httpx.AsyncClient, Verifier], live_fake: FakeTwilio
) -> None:
    http, v = webhook_app
    ver = await v.start(UK_MOBILE)
    sent = live_fake.requests[-1]
    callback_url = sent.form["StatusCallback"]
    assert callback_url == f"https://otp.example.com/webhooks/twilio/status?vid={ver.id}"
    sid = next(iter(live_fake.resources))
    cb = live_fake.status_callback(sid, "undelivered", error_code=30003)
    assert cb.url == callback_url
    path = cb.url.removeprefix("https://otp.example.com")
    r = await http.post(path, data=cb.form, headers=cb.headers)
    assert r.status_code == 204
    events = await v.store.list_events(EventQuery(types=("verification.delivery_status",)))
    assert [(e.reason, e.provider_code, e.verification_id) for e in events] == [
        ("undelivered", 30003, ver.id)
    ]
    forged = dict(cb.form, MessageStatus="delivered")
    r = await http.post(path, data=forged, headers=cb.headers)
    assert r.status_code == 403


async def test_a_replayed_status_callback_counts_once(
    webhook_app: tuple[httpx.AsyncClient, Verifier], live_fake: FakeTwilio, clock: ManualClock
) -> None:
    """The same signed "undelivered / 21211" posted again (a replay) changes nothing,
    and a signed callback for a message otpguard did not send counts for nothing."""
    http, v = webhook_app
    ver = await v.start(UK_MOBILE)
    sid = next(iter(live_fake.resources))
    cb = live_fake.status_callback(sid, "undelivered", error_code=21211)
    path = cb.path_and_query
    for _ in range(3):
        assert (await http.post(path, data=cb.form, headers=cb.headers)).status_code == 204
        clock.advance(600)
    events = await v.store.list_events(EventQuery(types=("verification.delivery_status",)))
    assert [(e.reason, e.provider_code, e.verification_id) for e in events] == [
        ("undelivered", 21211, ver.id)
    ]
    flag = await v.store.get_flag(f"undeliverable:{UK_MOBILE}", clock())
    assert flag == "invalid_number"
    clock.advance(v.settings.undeliverable_ttl - 1800 + 1)  # a day after the first only
    assert await v.store.get_flag(f"undeliverable:{UK_MOBILE}", clock()) is None


@pytest.mark.parametrize(
    "fault", [Fault.accepted_then_drop(), Fault.accepted_then_error(500)], ids=["drop", "500"]
)
async def test_five_starts_are_five_requests_when_twilio_answers_badly(
    live_fake: FakeTwilio, tmp_path: Path, clock: ManualClock, fault: Fault
) -> None:
    """A Twilio that takes the request and then drops the connection (or answers 500)
    sent each message; a retry would send each twice. Each start says its delivery is
    "unknown", and the code that did arrive works."""
    # Not one range, so no fraud rule is in the way.
    numbers = ["+447400123456", "+447411123456", "+447522123456", "+447833123456", "+447944123456"]
    v = await open_engine(engine_settings(live_fake, tmp_path, dev_allowed_numbers=numbers), clock)
    try:
        live_fake.fail_next(*[fault] * 10)
        started = []
        for number in numbers:
            ver = await v.start(number, client_ip=f"192.0.2.{len(live_fake.requests) + 1}")
            assert (ver.delivery, ver.status) == ("unknown", Status.PENDING)
            started.append(ver)
        assert len(live_fake.requests) == 5
        assert sorted(r.form["To"] for r in live_fake.sent()) == numbers
        for ver in started:  # the phone got its code: it approves
            [code] = live_fake.codes_sent_to(ver.to)
            assert (await v.check(code, verification_id=ver.id)).valid
    finally:
        await v.aclose()


async def test_a_timed_out_send_stays_usable_and_its_report_settles_it(
    live_fake: FakeTwilio, tmp_path: Path, clock: ManualClock
) -> None:
    """Twilio answers after the client's timeout: the start answers with delivery
    "unknown" (not a failure), the verification stays pending, and Twilio's later
    "undelivered" report, which names the message, fails it."""
    settings = engine_settings(
        live_fake,
        tmp_path,
        public_url="https://otp.example.com",
        dev_allowed_numbers=[UK_MOBILE],
        twilio_timeout=0.5,
    )
    v = Verifier(
        settings, store_from_url(settings.store_url), transport_from_settings(settings), clock=clock
    )
    app = create_app(settings, v, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        live_fake.fail_next(Fault.stall())
        try:
            ver = await v.start(UK_MOBILE)
        finally:
            live_fake.release()  # Twilio creates the message after all
        assert (ver.delivery, (await v.get(ver.id)).status) == ("unknown", Status.PENDING)
        events = await v.store.list_events(EventQuery(types=("verification.sent",)))
        assert [(e.reason, e.details.get("outcome")) for e in events] == [
            ("outcome_unknown", "unknown")
        ]
        for _ in range(500):  # a deadline for the fake's thread, not a timing assertion
            if live_fake.resources:
                break
            await asyncio.sleep(0.01)
        sid = next(iter(live_fake.resources))
        cb = live_fake.status_callback(sid, "undelivered", error_code=30003)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5:8000") as http:
            r = await http.post(cb.path_and_query, data=cb.form, headers=cb.headers)
        assert r.status_code == 204
        assert (await v.get(ver.id)).status is Status.FAILED
