"""Adding a key in front of OTPGUARD_SECRET_KEYS, as docs/hardening.md describes it:
what was keyed by a number's hash under the old key (its trusted flag, its events,
its /v2 verification) is still found. Each test runs a Verifier with the old key,
then a new one on the same store with ``[new, old]``, as a restarted instance would;
a third with ``[new]`` alone shows what the lookup under the old key is for."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import Settings
from otpguard.errors import RateLimited
from otpguard.service import DeliveryReport, Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from .conftest import UK_MOBILE

OLD, NEW = new_secret_hex(), new_secret_hex()
BLOCK = "+44740012"  # the customer's number block (4 digits cut: admission's block4)
CUSTOMER = BLOCK + "9000"


@pytest.fixture
def keys(settings_factory: Callable[..., Settings], tmp_path: Path) -> Callable[..., Settings]:
    """Settings with the given keys, newest first, all on one store file."""
    url = f"sqlite:///{tmp_path / 'rotation.db'}"

    def factory(*secret_keys: str, **overrides: Any) -> Settings:
        return settings_factory(store=url, secret_keys=list(secret_keys), **overrides)

    return factory


@contextlib.asynccontextmanager
async def running(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport
) -> AsyncIterator[Verifier]:
    async with Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock) as v:
        yield v


class App:
    """The app on a Verifier, over an in-process ASGI transport, with one API key."""

    def __init__(self, http: httpx.AsyncClient, verifier: Verifier, key: str) -> None:
        self.http, self.verifier, self.key = http, verifier, key
        user = "og_" + key.split("_")[1]
        token = base64.b64encode(f"{user}:{key}".encode()).decode()
        self.bearer = {"Authorization": f"Bearer {key}"}
        self.basic = {"Authorization": f"Basic {token}"}


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport, key: str | None = None
) -> AsyncIterator[App]:
    """``key``: the API key made by an earlier app on the store (None: make one)."""
    verifier = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
    app = create_app(settings, verifier, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        if key is None:
            _, key = await create_api_key(verifier.store, "rotation", ("verify", "admin"), clock())
        transport = httpx.ASGITransport(app=app, client=("203.0.113.50", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield App(http, verifier, key)


async def sent(otp: Verifier, to: str, ip: str) -> str:
    try:
        await otp.start(to, client_ip=ip)
    except RateLimited as exc:
        return f"rate_limited:{exc.rule}"
    return "sent"


async def test_a_trusted_number_stays_trusted(
    keys: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    tight = {"admission_block_4": "1/1h", "admission_share": 0.0}
    async with running(keys(OLD, **tight), clock, outbox) as v1:
        v = await v1.start(CUSTOMER, client_ip="10.0.0.1")
        assert (await v1.check(outbox.last_code(CUSTOMER), verification_id=v.id)).valid
    async with running(keys(NEW, OLD, **tight), clock, outbox) as v2:
        assert await sent(v2, BLOCK + "0001", "10.0.1.1") == "sent"  # the block's one slot
        assert await sent(v2, BLOCK + "0002", "10.0.2.1") == "rate_limited:block"
        assert await sent(v2, CUSTOMER, "10.0.3.1") == "sent"  # trusted: no bucket
    async with running(keys(NEW, **tight), clock, outbox) as v3:  # the old key retired
        assert await sent(v3, CUSTOMER, "10.0.4.1") == "rate_limited:block"


async def test_a_numbers_events_are_still_found_by_number(
    keys: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    by_number = {"number": UK_MOBILE}
    async with serving(keys(OLD), clock, outbox) as app:
        before = await app.verifier.start(UK_MOBILE)
        key = app.key
    first_message = "MM00000001"  # the memory transport's id for it
    clock.advance(60)
    async with serving(keys(NEW), clock, outbox, key) as app:  # without the old key
        r = await app.http.get("/v1/admin/events", params=by_number, headers=app.bearer)
        assert r.json()["events"] == []
        report = await app.verifier.record_delivery_status(before.id, "sent", None, first_message)
        assert report is DeliveryReport.UNKNOWN_MESSAGE
    async with serving(keys(NEW, OLD), clock, outbox, key) as app:
        after = await app.verifier.start(UK_MOBILE)
        r = await app.http.get("/v1/admin/events", params=by_number, headers=app.bearer)
        assert r.status_code == 200
        found = [(e["verification_id"], e["type"]) for e in r.json()["events"]]
        assert [vid for vid, _ in found] == [after.id] * 2 + [before.id] * 2  # newest first
        assert set(found) == {
            (v.id, t)
            for v in (before, after)
            for t in ("verification.started", "verification.sent")
        }
        # A delivery report on the message sent before the key was added counts.
        report = await app.verifier.record_delivery_status(before.id, "sent", None, first_message)
        assert report is DeliveryReport.RECORDED


async def test_a_pending_v2_verification_is_still_resent(
    keys: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    to = {"To": UK_MOBILE, "Channel": "sms"}
    async with serving(keys(OLD), clock, outbox) as app:
        r = await app.http.post("/v2/Services", headers=app.basic, data={"FriendlyName": "Acme"})
        sid = r.json()["sid"]
        url = f"/v2/Services/{sid}/Verifications"
        first = (await app.http.post(url, headers=app.basic, data=to)).json()
        key = app.key
    clock.advance(30)
    async with serving(keys(NEW, OLD), clock, outbox, key) as app:
        again = (await app.http.post(url, headers=app.basic, data=to)).json()
        assert again["sid"] == first["sid"]  # re-sent on, not a second verification
        assert len(again["send_code_attempts"]) == 2  # the send before the key, and this one
        attempts = await app.http.get(
            "/v2/Attempts", headers=app.basic, params={"ChannelData.To": UK_MOBILE}
        )
        assert len(attempts.json()["attempts"]) == 2
        # Locked by wrong codes, it still answers 60202 (found through its number).
        wrong = {"To": UK_MOBILE, "Code": "000000"}  # trivial: never a code sent
        check = f"/v2/Services/{sid}/VerificationCheck"
        answers = [
            (await app.http.post(check, headers=app.basic, data=wrong)).json().get("code")
            for _ in range(6)
        ]
        assert answers == [20404] * 4 + [60202, 60202]
