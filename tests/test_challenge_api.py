"""The challenge step end to end with ``OTPGUARD_CHALLENGE_MODE=always``: the Verifier, /v1,
/v2 and the client, against the fake siteverify server. Codes are read from the outbox."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpguard.apikeys import create_api_key
from otpguard.client import AsyncClient
from otpguard.clock import ManualClock
from otpguard.errors import ChallengeRequired, ChallengeUnavailable, RateLimited
from otpguard.events import Event, EventType
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from .conftest import make_settings
from .fake_siteverify import SECRET, SITE_KEY, FakeSiteverify, fake_siteverify
from .serverproc import fresh_number

__all__ = ["fake_siteverify"]  # the fixture, re-exported for pytest

CHALLENGE = {"provider": "turnstile", "site_key": SITE_KEY}
PEER = "203.0.113.50"


class Setup:
    def __init__(self, http: httpx.AsyncClient, verifier: Verifier, key: str) -> None:
        self.http = http
        self.verifier = verifier
        self.key = key
        self.events: list[Event] = []
        verifier.listeners.append(self.events.append)

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def basic(self) -> dict[str, str]:
        raw = f"og_{self.key.split('_')[1]}:{self.key}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def refusals(self) -> list[str | None]:
        return [e.reason for e in self.events if e.type == EventType.REFUSED.value]


@pytest.fixture
def setup(
    tmp_path: Path, clock: ManualClock, outbox: MemoryTransport, fake_siteverify: FakeSiteverify
) -> Callable[..., Any]:
    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Setup]:
        settings = make_settings(
            tmp_path, **{**fake_siteverify.settings(challenge_mode="always"), **overrides}
        )
        verifier = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
        app = create_app(settings, verifier, clock=clock, background=False)
        async with app.router.lifespan_context(app):
            _, key = await create_api_key(verifier.store, "tests", ("verify",), clock())
            transport = httpx.ASGITransport(app=app, client=(PEER, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as h:
                yield Setup(h, verifier, key)

    return factory


async def test_engine_always_mode(
    setup: Callable[..., Any],
    fake_siteverify: FakeSiteverify,
    outbox: MemoryTransport,
    clock: ManualClock,
) -> None:
    async with setup() as s:
        otp = s.verifier
        to = fresh_number()
        with pytest.raises(ChallengeRequired) as caught:
            await otp.start(to, client_ip=PEER)
        assert caught.value.challenge == CHALLENGE and caught.value.reason == "challenge_required"
        assert caught.value.status == 428 and fake_siteverify.requests == []
        with pytest.raises(ChallengeRequired) as failed:
            await otp.start(to, client_ip=PEER, challenge_token="XXXX.FAKE.forged")
        assert failed.value.reason == "challenge_failed"
        assert outbox.sent_to(to) == []
        token = fake_siteverify.issue()
        v = await otp.start(to, client_ip=PEER, challenge_token=token, account_id="user-42")
        assert [m.verification_id for m in outbox.sent_to(to)] == [v.id]
        assert fake_siteverify.requests[-1].form["remoteip"] == PEER
        with pytest.raises(ChallengeRequired) as reused:  # the provider refuses it again
            await otp.start(to, client_ip=PEER, challenge_token=token)
        assert reused.value.reason == "challenge_failed"
        assert s.refusals() == ["challenge_required", "challenge_failed", "challenge_failed"]
        # A resend belongs to a challenged start: it is not challenged again.
        clock.advance(30)
        await otp.resend(v.id, client_ip=PEER)
        assert len(outbox.sent_to(to)) == 2


async def test_a_passed_challenge_does_not_lift_the_per_number_limit(
    setup: Callable[..., Any], fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with setup(limit_phone="2/10m") as s:
        to = fresh_number()
        for _ in range(2):
            await s.verifier.start(to, challenge_token=fake_siteverify.issue())
        with pytest.raises(RateLimited) as caught:
            await s.verifier.start(to, challenge_token=fake_siteverify.issue())
        assert caught.value.rule.startswith("phone") and len(outbox.sent_to(to)) == 2


async def test_allowlisted_numbers_are_not_challenged(
    setup: Callable[..., Any], fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    to = fresh_number()
    async with setup(allowlist=[to]) as s:
        await s.verifier.start(to)
    assert len(outbox.sent_to(to)) == 1 and fake_siteverify.requests == []


async def test_provider_down_is_503_and_nothing_is_sent(
    setup: Callable[..., Any], fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with setup(challenge_verify_url=FakeSiteverify.down_url()) as s:
        to = fresh_number()
        token = fake_siteverify.issue()
        with pytest.raises(ChallengeUnavailable):
            await s.verifier.start(to, challenge_token=token)
        r = await s.http.post(
            "/v1/verifications", headers=s.bearer(), json={"to": to, "challenge_token": token}
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "challenge_unavailable"
        assert outbox.sent_to(to) == [] and token not in r.text
        assert s.refusals() == ["challenge_unavailable", "challenge_unavailable"]


async def test_a_slow_provider_is_503_and_nothing_is_sent(
    setup: Callable[..., Any], fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    fake_siteverify.mode = "slow"
    async with setup(challenge_timeout=0.2) as s:
        to = fresh_number()
        r = await s.http.post(
            "/v1/verifications",
            headers=s.bearer(),
            json={"to": to, "challenge_token": fake_siteverify.issue()},
        )
        fake_siteverify.release()
    assert r.status_code == 503 and r.json()["error"]["code"] == "challenge_unavailable"
    assert outbox.sent_to(to) == []


async def test_v1_answers_428_in_the_documented_shape(
    setup: Callable[..., Any], fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with setup() as s:
        to = fresh_number()
        r = await s.http.post("/v1/verifications", headers=s.bearer(), json={"to": to})
        assert r.status_code == 428
        assert r.json() == {
            "error": {
                "code": "challenge_required",
                "message": "show the CAPTCHA and repeat the start with its challenge_token",
                "reason": "challenge_required",
                "challenge": CHALLENGE,
            }
        }
        assert SECRET not in r.text
        bad = await s.http.post(
            "/v1/verifications",
            headers=s.bearer(),
            json={"to": to, "challenge_token": "XXXX.FAKE.forged"},
        )
        assert bad.status_code == 428 and bad.json()["error"]["reason"] == "challenge_failed"
        assert "XXXX.FAKE.forged" not in bad.text
        token = fake_siteverify.issue()
        ok = await s.http.post(
            "/v1/verifications",
            headers=s.bearer(),
            json={"to": to, "challenge_token": token, "account_id": "user-42"},
        )
        assert ok.status_code == 201 and len(outbox.sent_to(to)) == 1
        assert token not in ok.text


@pytest.mark.parametrize(
    "extra",
    [
        {"challenge_token": "a" * 4097},
        {"challenge_token": ""},
        {"challenge_token": 12},
        {"account_id": ""},
        {"account_id": "a" * 129},
    ],
)
async def test_v1_bounds_the_new_fields(
    setup: Callable[..., Any], fake_siteverify: FakeSiteverify, extra: dict[str, Any]
) -> None:
    async with setup() as s:
        r = await s.http.post(
            "/v1/verifications", headers=s.bearer(), json={"to": fresh_number(), **extra}
        )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert "a" * 100 not in r.text and fake_siteverify.requests == []


async def test_v2_answers_twilios_blocked_error(
    setup: Callable[..., Any], outbox: MemoryTransport
) -> None:
    async with setup() as s:
        svc = await s.http.post("/v2/Services", headers=s.basic(), data={"FriendlyName": "Acme"})
        sid = svc.json()["sid"]
        to = fresh_number()
        r = await s.http.post(
            f"/v2/Services/{sid}/Verifications",
            headers=s.basic(),
            data={"To": to, "Channel": "sms"},
        )
    assert r.status_code == 403
    assert r.json() == {
        "code": 60410,
        "message": "Verification delivery attempt blocked (challenge)",
        "more_info": "https://www.twilio.com/docs/errors/60410",
        "status": 403,
    }
    assert outbox.sent_to(to) == []


async def test_the_client_raises_a_typed_challenge_required(
    setup: Callable[..., Any], fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with setup() as s:
        app = s.http._transport.app  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app, client=(PEER, 40001))
        async with AsyncClient("http://testserver", s.key, transport=transport) as client:
            to = fresh_number()
            with pytest.raises(ChallengeRequired) as caught:
                await client.start(to, client_ip=PEER)
            assert caught.value.provider == "turnstile" and caught.value.site_key == SITE_KEY
            assert caught.value.reason == "challenge_required"
            with pytest.raises(ChallengeRequired) as failed:
                await client.start(to, client_ip=PEER, challenge_token="XXXX.FAKE.forged")
            assert failed.value.reason == "challenge_failed"
            v = await client.start(
                to, client_ip=PEER, challenge_token=fake_siteverify.issue(), account_id="u1"
            )
            assert v.pending and len(outbox.sent_to(to)) == 1


def test_open_sync_verifier_builds_the_challenge_from_settings(
    tmp_path: Path, fake_siteverify: FakeSiteverify
) -> None:
    from otpguard.sync import open_sync_verifier

    settings = make_settings(tmp_path, **fake_siteverify.settings(challenge_mode="always"))
    with open_sync_verifier(settings) as otp:
        to = fresh_number()
        with pytest.raises(ChallengeRequired) as caught:
            otp.start(to, client_ip=PEER)
        assert caught.value.challenge == CHALLENGE
        v = otp.start(to, client_ip=PEER, challenge_token=fake_siteverify.issue())
        assert v.status.value == "pending"
    assert len(fake_siteverify.requests) == 1
