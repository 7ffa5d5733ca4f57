"""Webhooks to the integrating app, end to end: a real HTTP receiver on loopback that
checks every signature, the Verifier behind the ASGI app, the worker on the test clock."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otpguard.client import WebhookSignatureError, verify_webhook
from otpguard.clock import ManualClock
from otpguard.codes import Keyring, new_secret_hex
from otpguard.config import Settings
from otpguard.errors import InvalidRequest, OtpguardError, StorageError
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.stores.webhooks import WebhookStore
from otpguard.transports.memory import MemoryTransport
from otpguard.webhook_delivery import BACKOFF_CAP, WebhookOutbox, WebhookWorker, backoff
from otpguard.webhook_signature import sign_webhook
from otpguard.webhooks import check_url, key_scope, set_endpoint, signing_secret

from .conftest import TEST_KEY, UK_MOBILE, ApiClient, open_api
from .webhook_receiver import Receiver, running_receiver

ADMIN = ("verify", "admin")
PREMIUM = "+449012345678"


@pytest.fixture
def receiver(clock: ManualClock) -> Iterator[Receiver]:
    yield from running_receiver(clock)


def key_id(api: ApiClient) -> str:
    return api.key.split("_")[1]


async def hook(api: ApiClient, url: str, **extra: Any) -> dict[str, Any]:
    r = await api.request(
        "PUT", f"/v1/admin/webhooks/keys/{key_id(api)}", json={"url": url, **extra}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def worker(api: ApiClient) -> WebhookWorker:
    w: WebhookWorker = api.http._transport.app.state.webhook_worker  # type: ignore[attr-defined]
    return w


def verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every received body, each signature checked as the app would when it arrived."""
    return [
        verify_webhook(r.body, r.headers.get("Otpguard-Signature"), secret, now=r.at)
        for r in receiver.received
    ]


async def drain(api: ApiClient, clock: ManualClock, rounds: int = 1) -> None:
    for _ in range(rounds):
        while await worker(api).run_once():
            pass
        clock.advance(BACKOFF_CAP + 1)


@contextlib.asynccontextmanager
async def app(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport
) -> AsyncIterator[ApiClient]:
    async with open_api(settings, clock, outbox, ADMIN) as api:
        yield api


async def test_a_verifications_life_arrives_signed(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport, receiver: Receiver
) -> None:
    async with app(settings, clock, outbox) as api:
        secret = (await hook(api, receiver.url))["secret"]
        assert secret.startswith("whsec_")
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
        vid = r.json()["id"]
        code = outbox.last_code(UK_MOBILE)
        assert (await api.post("/v1/verifications/check", json={"id": vid, "code": code})).json()[
            "valid"
        ]
        second = (await api.post("/v1/verifications", json={"to": "+447400654321"})).json()["id"]
        await api.post(f"/v1/verifications/{second}/cancel")
        assert (await api.post("/v1/verifications", json={"to": PREMIUM})).status_code == 403
        await drain(api, clock)
        bodies = verified(receiver, secret)
    by_type = {b["type"]: b for b in bodies}
    assert sorted(b["type"] for b in bodies) == sorted(
        ["started", "sent", "approved", "started", "sent", "canceled", "refused"]
    )
    approved = by_type["approved"]
    assert approved["verification_id"] == vid
    assert approved["to"] == "+44******3456"
    assert approved["status"] == "approved"
    assert approved["channel"] == "sms"
    assert approved["api_key"] == key_id(api)
    refused = by_type["refused"]
    assert refused["verification_id"] is None
    assert refused["to"] == "+44******5678"
    assert refused["reason"] == "premium_rate"
    assert by_type["canceled"]["verification_id"] == second
    # One event id per webhook, in the header and the body.
    assert [r.headers["Otpguard-Event-Id"] for r in receiver.received] == [b["id"] for b in bodies]
    # Never the code, never the full number: in the bodies or the headers.
    everything = "\n".join(r.body.decode() + repr(r.headers) for r in receiver.received)
    assert code not in everything
    for number in (UK_MOBILE, PREMIUM, "+447400654321", "7400123456", "9012345678"):
        assert number not in everything


async def test_expiry_and_a_locked_verification(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    receiver: Receiver,
) -> None:
    settings = settings_factory(max_attempts=1)
    async with app(settings, clock, outbox) as api:
        secret = (await hook(api, receiver.url))["secret"]
        vid = (await api.post("/v1/verifications", json={"to": UK_MOBILE})).json()["id"]
        wrong = "0" * 5 + ("1" if outbox.last_code(UK_MOBILE)[-1] != "1" else "2")
        await api.post("/v1/verifications/check", json={"id": vid, "code": wrong})
        other = (await api.post("/v1/verifications", json={"to": "+447400654321"})).json()["id"]
        clock.advance(settings.code_ttl + 1)
        await api.get(f"/v1/verifications/{other}")
        await drain(api, clock)
        bodies = verified(receiver, secret)
    final = {(b["type"], b["verification_id"]): b["status"] for b in bodies}
    assert final[("failed", vid)] == "max_attempts_reached"
    assert final[("expired", other)] == "expired"


async def test_a_slow_receiver_never_slows_a_start(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport, receiver: Receiver
) -> None:
    """The receiver holds the first webhook until the second start has answered."""
    receiver.hold = True
    async with app(settings, clock, outbox) as api:
        await hook(api, receiver.url)
        stop = asyncio.Event()
        job = asyncio.create_task(worker(api).run(stop))
        try:
            assert (await api.post("/v1/verifications", json={"to": UK_MOBILE})).status_code == 201
            assert await asyncio.to_thread(receiver.entered.wait, 30)  # the worker is stuck
            r = await api.post("/v1/verifications", json={"to": "+447400654321"})
            assert r.status_code == 201  # answered while the receiver still holds
            assert not receiver.release.is_set()
            held = len(receiver.received)
        finally:
            receiver.release.set()
            stop.set()
            await asyncio.wait_for(job, 30)
    assert held >= 1


async def test_retries_after_500s_then_delivered(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport, receiver: Receiver
) -> None:
    receiver.codes = [500, 502]
    async with app(settings, clock, outbox) as api:
        secret = (await hook(api, receiver.url))["secret"]
        api.verifier.webhooks = _only_started(api)
        await api.post("/v1/verifications", json={"to": UK_MOBILE})
        for _ in range(3):
            assert await worker(api).run_once() == 1
            assert await worker(api).run_once() == 0  # not due again before its backoff
            clock.advance(BACKOFF_CAP + 1)
        assert await worker(api).run_once() == 0  # delivered: never again
        log = (await api.get("/v1/admin/webhooks/deliveries")).json()["deliveries"]
    bodies = verified(receiver, secret)
    assert len({b["id"] for b in bodies}) == 1
    assert [r.headers["Otpguard-Delivery-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    (d,) = log
    assert d["status"] == "delivered"
    assert [a["status_code"] for a in d["log"]] == [500, 502, 200]
    assert d["log"][0]["error"] == "HTTP 500"
    assert d["next_attempt_at"] is None


def _only_started(api: ApiClient) -> WebhookOutbox:
    """The app's outbox, keeping only ``started`` webhooks (one row per start)."""
    outbox: WebhookOutbox = api.http._transport.app.state.webhooks  # type: ignore[attr-defined]
    rows = outbox.rows

    def started_only(events: Any, *args: Any) -> Any:
        return [r for r in rows(events, *args) if r.event_type == "started"]

    outbox.rows = started_only  # type: ignore[method-assign]
    return outbox


async def test_a_failing_endpoint_ends_failed_in_the_log(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    receiver: Receiver,
) -> None:
    settings = settings_factory(webhook_max_attempts=3)
    receiver.codes = [503] * 10
    async with app(settings, clock, outbox) as api:
        await hook(api, receiver.url)
        _only_started(api)
        await api.post("/v1/verifications", json={"to": UK_MOBILE})
        await drain(api, clock, rounds=5)
        failed = (
            await api.get("/v1/admin/webhooks/deliveries", params={"status": "failed"})
        ).json()
        pending = (
            await api.get("/v1/admin/webhooks/deliveries", params={"status": "pending"})
        ).json()
    assert len(receiver.received) == 3
    (d,) = failed["deliveries"]
    assert (d["attempts"], d["last_status_code"], d["last_error"]) == (3, 503, "HTTP 503")
    assert pending["deliveries"] == []


async def test_an_unreachable_endpoint_is_retried_then_failed(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    settings = settings_factory(webhook_max_attempts=2)
    dead = Receiver()
    url = dead.url
    dead.server.server_close()  # nothing listens there any more
    async with app(settings, clock, outbox) as api:
        await hook(api, url)
        _only_started(api)
        await api.post("/v1/verifications", json={"to": UK_MOBILE})
        await drain(api, clock, rounds=3)
        (d,) = (await api.get("/v1/admin/webhooks/deliveries")).json()["deliveries"]
    assert d["status"] == "failed"
    assert [a["status_code"] for a in d["log"]] == [None, None]
    assert d["last_error"].startswith("connection failed")


async def test_two_servers_on_one_store_deliver_each_webhook_once(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    settings = settings_factory(store=f"sqlite:///{tmp_path / 'shared.db'}")
    async with app(settings, clock, outbox) as one, app(settings, clock, outbox) as two:
        await hook(one, receiver.url)
        for n in range(10):
            await one.post("/v1/verifications", json={"to": f"+4474001234{n:02d}"})
        await two.http._transport.app.state.webhooks.refresh()  # type: ignore[attr-defined]
        while sum(await asyncio.gather(worker(one).run_once(), worker(two).run_once())):
            pass
    ids = [r.headers["Otpguard-Event-Id"] for r in receiver.received]
    assert len(ids) == 20  # started and sent for each
    assert len(set(ids)) == 20


async def test_a_worker_learns_of_an_endpoint_set_on_another_server(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    settings = settings_factory(store=f"sqlite:///{tmp_path / 'shared.db'}")
    async with app(settings, clock, outbox) as one, app(settings, clock, outbox) as two:
        await worker(two).outbox.refresh()  # two knows of no endpoint, and trusts that
        await hook(one, receiver.url)
        await one.post("/v1/verifications", json={"to": UK_MOBILE})
        assert await worker(two).run_once() == 2
        log = (await two.get("/v1/admin/webhooks/deliveries")).json()["deliveries"]
    assert sorted(receiver.types()) == ["sent", "started"]
    assert {d["status"] for d in log} == {"delivered"}


async def test_a_store_failure_while_queueing_never_fails_a_start(
    settings: Settings,
    clock: ManualClock,
    outbox: MemoryTransport,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with app(settings, clock, outbox) as api:
        await hook(api, receiver.url)
        store = api.verifier.store
        assert isinstance(store, WebhookStore)

        async def broken(*args: Any) -> int:
            raise StorageError("sqlite store: enqueue_webhooks failed (disk I/O error)")

        monkeypatch.setattr(store, "enqueue_webhooks", broken)
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
        assert r.status_code == 201
    assert any("were not queued" in rec.getMessage() for rec in caplog.records)


async def test_refused_webhooks_are_bounded_per_endpoint(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    receiver: Receiver,
) -> None:
    settings = settings_factory(webhook_refused_per_minute=3)
    async with app(settings, clock, outbox) as api:
        await hook(api, receiver.url)
        for n in range(12):  # twelve kinds: a different client each
            body = {"to": PREMIUM, "client_ip": f"198.51.{n}.7"}
            assert (await api.post("/v1/verifications", json=body)).status_code == 403
        for _ in range(5):  # repeats of one kind count as the first of them
            await api.post("/v1/verifications", json={"to": PREMIUM})
        await drain(api, clock)
        assert receiver.types() == ["refused"] * 3
        clock.advance(60)
        await api.post("/v1/verifications", json={"to": PREMIUM})  # a new minute
        await drain(api, clock)
    assert receiver.types() == ["refused"] * 4


async def test_changing_the_url_keeps_the_secret_and_rotation_makes_a_new_one(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport, receiver: Receiver
) -> None:
    async with app(settings, clock, outbox) as api:
        first = await hook(api, "https://hooks.example/a")
        changed = await hook(api, receiver.url)
        assert changed["secret"] is None
        assert changed["endpoint"]["id"] == first["endpoint"]["id"]
        rotated = await hook(api, receiver.url, rotate_secret=True)
        assert rotated["secret"] not in (None, first["secret"])
        listed = (await api.get("/v1/admin/webhooks")).json()["endpoints"]
        await api.post("/v1/verifications", json={"to": UK_MOBILE})
        await drain(api, clock)
    assert [e["url"] for e in listed] == [receiver.url]
    assert "secret" not in repr(listed).lower().replace("whsec", "")
    assert len(verified(receiver, rotated["secret"])) == 2
    with pytest.raises(WebhookSignatureError):
        verified(receiver, first["secret"])


async def test_a_retired_signing_key_fails_the_webhook_until_rotated(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport, receiver: Receiver
) -> None:
    """Embedded use: the outbox and worker wired by hand. A key added in front of the
    keyring keeps the endpoint's secret; once its key retires, webhooks fail (never
    signed with another secret) until the endpoint is rotated."""
    verifier = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
    async with verifier:
        store = verifier.store
        assert isinstance(store, WebhookStore)
        hooks = WebhookOutbox(store, settings.webhooks)
        verifier.webhooks = hooks
        done = await set_endpoint(store, verifier.keyring, key_scope("k1"), receiver.url,
                                  clock(), settings.webhooks)  # fmt: skip
        assert done.secret is not None
        newer = Keyring.from_hex([new_secret_hex(), TEST_KEY])
        assert signing_secret(newer, done.endpoint) == done.secret
        await verifier.start(UK_MOBILE, owner="k1")
        sent = WebhookWorker(store, newer, settings.webhooks, hooks, clock=clock)
        assert await sent.run_once() == 2
        assert len(verified(receiver, done.secret)) == 2
        await sent.aclose()
        retired = Keyring.from_hex([new_secret_hex()])
        await verifier.start("+447400654321", owner="k1")
        failing = WebhookWorker(store, retired, settings.webhooks, hooks, clock=clock)
        assert await failing.run_once() == 2
        await failing.aclose()
        rows = await store.list_webhook_deliveries(status="failed")
        rotated = await set_endpoint(
            store, retired, key_scope("k1"), receiver.url, clock(), settings.webhooks,
            rotate=True,
        )  # fmt: skip
    assert len(receiver.received) == 2  # nothing was posted without a valid secret
    assert [d.last.error if d.last else "" for d in rows] == [
        "signing key retired: set the webhook again with --rotate-secret"
    ] * 2
    assert rotated.secret is not None and rotated.secret != done.secret
    assert signing_secret(retired, rotated.endpoint) == rotated.secret


def test_urls_in_production() -> None:
    prod = {"production": True, "allow_private": False}
    assert check_url("https://hooks.example.com/otp", **prod) == "https://hooks.example.com/otp"
    for bad in (
        "http://hooks.example.com/otp",
        "https://localhost/otp",
        "https://127.0.0.1/otp",
        "https://10.1.2.3/otp",
        "https://[::1]/otp",
        "https://169.254.169.254/latest",
        "https://user:pw@hooks.example.com/",
        "ftp://hooks.example.com/",
        "https:///nohost",
    ):
        with pytest.raises(InvalidRequest):
            check_url(bad, **prod)
    assert check_url("https://10.1.2.3/otp", production=True, allow_private=True)
    assert check_url("http://localhost:8080/otp", production=False, allow_private=False)


def test_the_signature_helper_refuses_what_it_should() -> None:
    secret = "whsec_" + "ab" * 32
    body = b'{"id":"e1","type":"approved"}'
    header = sign_webhook(body, secret, 1_800_000_000)
    assert verify_webhook(body, header, secret, now=1_800_000_100)["type"] == "approved"
    for args, now in (
        ((body + b" ", header, secret), 1_800_000_000),  # body changed
        ((body, header, "whsec_" + "cd" * 32), 1_800_000_000),  # another secret
        ((body, header, secret), 1_800_000_301),  # too old: a replay
        ((body, header, secret), 1_799_999_699),  # from the future
        ((body, "t=1800000000", secret), 1_800_000_000),  # no signature
        ((body, None, secret), 1_800_000_000),
        ((body, header, "ab" * 32), 1_800_000_000),  # not a whsec_ secret
    ):
        with pytest.raises(WebhookSignatureError):
            verify_webhook(*args, now=now)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(7)
    delays = [backoff(n, rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        full = min(BACKOFF_CAP, 10.0 * 2 ** (n - 1))
        assert full / 2 <= d < full


async def test_an_engine_without_an_app_sends_no_webhooks(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    assert verifier.webhooks is None
    await verifier.start(UK_MOBILE)
    assert outbox.last_code(UK_MOBILE)


async def test_no_webhook_row_for_a_key_without_an_endpoint(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport
) -> None:
    async with app(settings, clock, outbox) as api:
        await api.post("/v1/verifications", json={"to": UK_MOBILE})
        with contextlib.suppress(OtpguardError):
            await api.verifier.start(PREMIUM, owner=key_id(api))
        store = api.verifier.store
        assert isinstance(store, WebhookStore)
        assert await store.list_webhook_deliveries() == []


async def test_the_dashboard_shows_the_delivery_log(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport, receiver: Receiver
) -> None:
    receiver.codes = [500]
    async with app(settings, clock, outbox) as api:
        empty = await signed_in_page(api)
        await hook(api, receiver.url)
        _only_started(api)
        await api.post("/v1/verifications", json={"to": UK_MOBILE})
        assert await worker(api).run_once() == 1
        page = await api.http.get("/dashboard")
    assert "No webhooks yet" in empty
    assert "Webhook deliveries" in page.text and "No webhooks yet" not in page.text
    panel = page.text.split('id="webhooks"', 1)[1]
    assert "started" in panel and "pending" in panel and "HTTP 500" in panel
    assert outbox.last_code(UK_MOBILE) not in page.text and UK_MOBILE not in page.text


async def signed_in_page(api: ApiClient) -> str:
    login = await api.http.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf
    r = await api.http.post("/dashboard/login", data={"csrf": csrf.group(1), "api_key": api.key})
    assert r.status_code == 303
    return (await api.http.get("/dashboard")).text
