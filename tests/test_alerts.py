"""Alert rules and the evaluator, driven by a ManualClock; the abuse scenario end to end
with a real webhook receiver on 127.0.0.1 that checks every signature."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from otpguard.alerts import AlertEvaluator
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import DeliveryError, OtpguardError
from otpguard.events import Event, EventType, new_event_id
from otpguard.service import Verifier
from otpguard.sinks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Dispatcher,
    Notice,
    WebhookSink,
    verify_signature,
)
from otpguard.stores import store_from_url
from otpguard.stores.base import Alert, EventQuery
from otpguard.transports.memory import MemoryTransport

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
HAMMERED = "+447400111111"
PUMPED_PREFIX = "+44740099"
PREMIUM = "+449012345678"

# Generous limits so the scenario reaches the alert rules instead of the rate limits.
SCENARIO_SETTINGS: dict[str, Any] = {
    "limit_phone": "100/10m",
    "limit_ip": "1000/10m",
    "limit_network": "off",
    "limit_prefix": "1000/10m",
    "limit_country": "10000/10m",
    "limit_global": "10000/1m",
    "fraud_budget_global": "100000/1h",
    "fraud_budget_country": "100000/1h",
    "fraud_conversion_min_sends": 10,
    "fraud_suspend_on_low_conversion": True,  # the prefix suspension is an opt-in
    "fraud_sequential_threshold": 1000,
    # Admission would cut the pumped prefix off first; these tests are about alerts.
    **{f"admission_{scope}": "off" for scope in ("global", "country", "api_key")},
    **{f"admission_block_{d}": "off" for d in (4, 5, 6)},
    "alert_spike_min": 40,
    "alert_conversion_min_sends": 10,
    "alert_sinks": ["log", "webhook"],
    "alert_webhook_url": "http://127.0.0.1:9/unused",
    "alert_webhook_secret": WEBHOOK_SECRET,
}


# -- a real webhook receiver -----------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    clock: ManualClock
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    fail_next: int = 0  # answer 500 to this many requests first
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver(clock: ManualClock) -> Iterator[Receiver]:
    state = Receiver(url="", clock=clock)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ok = verify_signature(
                WEBHOOK_SECRET,
                self.headers.get(TIMESTAMP_HEADER, ""),
                body,
                self.headers.get(SIGNATURE_HEADER, ""),
                now=state.clock(),
            )
            with state.lock:
                if not ok:
                    state.rejected += 1
                    status = 401
                elif state.fail_next > 0:
                    state.fail_next -= 1
                    status = 500
                else:
                    state.received.append(json.loads(body))
                    status = 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/otpguard"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def no_sleep(_: float) -> None:
    """Backoff without waiting: the test counts retries, it does not time them."""


# -- fixtures --------------------------------------------------------------------------------


@dataclass
class Rig:
    verifier: Verifier
    evaluator: AlertEvaluator
    dispatcher: Dispatcher
    clock: ManualClock
    outbox: MemoryTransport


@pytest.fixture
def rig_factory(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> Callable[..., Any]:
    import contextlib

    @contextlib.asynccontextmanager
    async def factory(receiver: Receiver | None = None, **overrides: Any) -> AsyncIterator[Rig]:
        settings = settings_factory(**{**SCENARIO_SETTINGS, **overrides})
        v = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
        sinks = [WebhookSink(receiver.url, WEBHOOK_SECRET, clock=clock)] if receiver else []
        dispatcher = Dispatcher(sinks, sleep=no_sleep)
        async with v:
            yield Rig(v, AlertEvaluator(v, dispatcher), dispatcher, clock, outbox)
            await dispatcher.aclose()

    return factory


async def start(v: Verifier, to: str, ip: str) -> bool:
    """A code request; True if it was sent, False if refused."""
    try:
        await v.start(to, client_ip=ip)
    except OtpguardError:
        return False
    return True


async def approve(v: Verifier, outbox: MemoryTransport, to: str, ip: str) -> None:
    assert await start(v, to, ip)
    result = await v.check(outbox.last_code(to), to=to, client_ip=ip)
    assert result.valid


def ip(n: int) -> str:
    return f"198.51.{n // 250}.{n % 250 + 1}"


async def run_abuse_scenario(v: Verifier, clock: ManualClock, outbox: MemoryTransport) -> None:
    """An hour of quiet traffic, then in five minutes: a spike, one number hammered,
    a prefix pumped (no code ever typed), a burst of premium-rate attempts."""
    for i in range(12):  # one approved verification every five minutes
        await approve(v, outbox, f"+4474002000{i:02d}", ip(i))
        clock.advance(300)
    n = 100
    # A prefix pumped: ten codes nobody types; the fraud rule judges them once their
    # codes have expired, and suspends the prefix on the next send.
    for i in range(10):
        assert await start(v, f"{PUMPED_PREFIX}{i:04d}", ip(n))
        n += 1
        clock.advance(1)
    clock.advance(301)
    for i in range(25):  # ordinary users, still converting
        await approve(v, outbox, f"+4474003000{i:02d}", ip(n))
        n += 1
        clock.advance(2)
    for _ in range(8):  # one number asked for again and again, from many addresses
        assert await start(v, HAMMERED, ip(n))
        n += 1
        clock.advance(2)
    sent = [await start(v, f"{PUMPED_PREFIX}{i:04d}", ip(n + i)) for i in range(10, 13)]
    n += 3
    assert sent == [True, False, False]  # suspended after the eleventh send
    clock.advance(2)
    for i in range(6):  # premium-rate destinations, refused by the policy
        assert not await start(v, f"{PREMIUM[:-2]}{i:02d}", ip(n + i))
        clock.advance(1)


EXPECTED_RULES = {
    "request_spike:all",
    "conversion_drop:prefix:" + PUMPED_PREFIX,
    "refused_destination:premium_rate",
}


def expected_ids(v: Verifier) -> set[str]:
    return EXPECTED_RULES | {"hot_number:" + v.keyring.keyed_hash("number", HAMMERED)[:16]}


# -- the scenario end to end -------------------------------------------------------------------


async def test_abuse_scenario_raises_exactly_the_expected_alerts_at_a_signed_webhook(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    async with rig_factory(receiver) as rig:
        await run_abuse_scenario(rig.verifier, rig.clock, rig.outbox)
        result = await rig.evaluator.evaluate(rig.clock())
        await rig.dispatcher.join()

        assert {a.id for a in result.opened} == expected_ids(rig.verifier)
        assert receiver.rejected == 0
        assert {m["state"] for m in receiver.received} == {"opened"}
        assert {m["alert"]["id"] for m in receiver.received} == expected_ids(rig.verifier)
        assert len(receiver.received) == 4
        body = json.dumps(receiver.received)
        assert HAMMERED not in body  # masked in alerts too
        assert not any(m.code in body for m in rig.outbox.outbox)

        # Deduplicated: the same incident is not announced twice.
        rig.clock.advance(30)
        again = await rig.evaluator.evaluate(rig.clock())
        await rig.dispatcher.join()
        assert again.opened == [] and again.resolved == []
        assert {a.id for a in again.open} == expected_ids(rig.verifier)
        assert len(receiver.received) == 4

        # Stored and recorded as events.
        stored = await rig.verifier.store.list_alerts(status="open")
        assert {a.id for a in stored} == expected_ids(rig.verifier)
        events = await rig.verifier.store.list_events(
            EventQuery(types=(EventType.ALERT_OPENED.value,))
        )
        assert {e.details["alert_id"] for e in events} == expected_ids(rig.verifier)

        # Two quiet hours later every condition has cleared: each alert resolves once.
        rig.clock.advance(7200)
        done = await rig.evaluator.evaluate(rig.clock())
        await rig.dispatcher.join()
        assert {a.id for a in done.resolved} == expected_ids(rig.verifier)
        assert done.open == []
        assert [m["state"] for m in receiver.received[4:]] == ["resolved"] * 4
        assert await rig.verifier.store.list_alerts(status="open") == []


async def test_webhook_receiver_rejects_a_body_signed_with_another_secret(
    receiver: Receiver, clock: ManualClock
) -> None:
    alert = Alert("r:s", "r", "s", "open", clock(), clock(), message="m")
    dispatcher = Dispatcher(
        [WebhookSink(receiver.url, "another-secret-entirely!", clock=clock)],
        attempts=2,
        sleep=no_sleep,
    )
    dispatcher.submit(Notice("opened", alert))
    await dispatcher.join()
    await dispatcher.aclose()
    assert receiver.received == []
    assert receiver.rejected == 2  # tried twice, refused twice
    assert dispatcher.failed == 1


# -- each rule on its own ---------------------------------------------------------------------


async def test_no_traffic_no_alerts(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory() as rig:
        result = await rig.evaluator.evaluate(rig.clock())
        assert result.opened == [] and result.open == []


async def test_steady_traffic_is_not_a_spike(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory(
        alert_spike_min=10, alert_conversion_min_sends=1000, fraud_conversion_min_sends=1000
    ) as rig:
        # 12 requests per 5 minutes for an hour and five minutes: steady, not a spike.
        for i in range(13 * 12):
            assert await start(rig.verifier, f"+4474005{i:05d}", ip(i))
            rig.clock.advance(25)
        result = await rig.evaluator.evaluate(rig.clock())
        assert {a.id for a in result.opened} == set(), result.opened


async def test_spike_needs_the_minimum_volume(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory(alert_spike_min=40, alert_conversion_min_sends=1000) as rig:
        for i in range(39):
            await start(rig.verifier, f"+4474005{i:05d}", ip(i))
        assert (await rig.evaluator.evaluate(rig.clock())).opened == []
        await start(rig.verifier, "+447400599999", ip(99))
        opened = (await rig.evaluator.evaluate(rig.clock())).opened
        assert [a.id for a in opened] == ["request_spike:all"]
        assert opened[0].details["recent"] == 40


async def test_hot_ip_over_threshold(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory(alert_ip_threshold=5) as rig:
        for i in range(5):
            await start(rig.verifier, f"+4474006{i:05d}", "203.0.113.9")
        assert (await rig.evaluator.evaluate(rig.clock())).opened == []
        await start(rig.verifier, "+447400699999", "203.0.113.9")
        opened = (await rig.evaluator.evaluate(rig.clock())).opened
        assert [(a.id, a.details["requests"]) for a in opened] == [("hot_ip:203.0.113.9", 6)]


async def test_country_conversion_drop(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory(alert_conversion_min_sends=10, fraud_conversion_min_sends=100) as rig:
        v = rig.verifier
        await approve(v, rig.outbox, "+447400700000", ip(0))
        for i in range(1, 10):
            await start(v, f"+4474007{i // 3:02d}{i:03d}", ip(i))
        # 1 approved of 10 sent: 10%, below 20%.
        opened = (await rig.evaluator.evaluate(rig.clock())).opened
        assert [a.id for a in opened] == ["conversion_drop:country:GB"]
        assert opened[0].details == {
            "country": "GB",
            "sent": 10,
            "approved": 1,
            "notified": True,
        }


async def test_delivery_failure_rate_and_provider_errors(
    rig_factory: Callable[..., Any], outbox: MemoryTransport
) -> None:
    async with rig_factory(
        alert_delivery_failure_min=5,
        alert_delivery_failure_rate=0.5,
        alert_provider_error_threshold=5,
    ) as rig:
        for i in range(4):
            assert await start(rig.verifier, f"+4474008{i:05d}", ip(i))
        outbox.fail_with = DeliveryError("provider_error", provider_code=20500, retryable=True)
        for i in range(4, 8):
            assert not await start(rig.verifier, f"+4474008{i:05d}", ip(i))
        assert (await rig.evaluator.evaluate(rig.clock())).opened == []  # 4 failures < 5
        assert not await start(rig.verifier, "+447400899999", ip(99))
        opened = {a.id: a for a in (await rig.evaluator.evaluate(rig.clock())).opened}
        assert set(opened) == {"delivery_failures:all", "provider_errors:provider"}
        assert opened["delivery_failures:all"].details["failed"] == 5
        assert opened["provider_errors:provider"].details["provider_codes"] == {"20500": 5}


async def test_undeliverable_numbers_are_not_provider_errors(
    rig_factory: Callable[..., Any], outbox: MemoryTransport
) -> None:
    async with rig_factory(alert_provider_error_threshold=2, alert_delivery_failure_min=50) as rig:
        outbox.fail_with = DeliveryError("invalid_number", provider_code=21211)
        for i in range(5):
            await start(rig.verifier, f"+4474008{i:05d}", ip(i))
        assert (await rig.evaluator.evaluate(rig.clock())).opened == []


async def test_budget_near_cap(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory(fraud_budget_global="10/1h", fraud_budget_country="100/1h") as rig:
        for i in range(7):
            assert await start(rig.verifier, f"+4474009{i:05d}", ip(i))
        assert (await rig.evaluator.evaluate(rig.clock())).opened == []
        assert await start(rig.verifier, "+447400988888", ip(8))  # 8 of 10: 80%
        opened = (await rig.evaluator.evaluate(rig.clock())).opened
        assert [a.id for a in opened] == ["budget_near_cap:global:3600"]
        assert opened[0].details["used"] == 8


async def test_non_allowed_destinations_count_per_reason(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory(alert_refused_destination_threshold=3) as rig:
        for i in range(3):
            assert not await start(rig.verifier, f"+3361234567{i}", ip(i))  # FR: not allowed
        for i in range(2):
            assert not await start(rig.verifier, PREMIUM, ip(i))
        opened = (await rig.evaluator.evaluate(rig.clock())).opened
        assert [a.id for a in opened] == ["refused_destination:country_not_allowed"]


async def test_store_failure_opens_an_alert_and_keeps_the_others(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    async with rig_factory(receiver, alert_ip_threshold=1) as rig:
        await start(rig.verifier, "+447400100001", "203.0.113.7")
        await start(rig.verifier, "+447400100002", "203.0.113.7")
        assert [a.id for a in (await rig.evaluator.evaluate(rig.clock())).opened] == [
            "hot_ip:203.0.113.7"
        ]
        await rig.verifier.store.aclose()  # the store goes away
        result = await rig.evaluator.evaluate(rig.clock() + 7200)
        await rig.dispatcher.join()
        assert [a.id for a in result.opened] == ["store_errors:store"]
        assert result.resolved == []  # nothing else can be judged without the store
        assert {a.id for a in result.open} == {"hot_ip:203.0.113.7", "store_errors:store"}
        assert [m["alert"]["id"] for m in receiver.received] == [
            "hot_ip:203.0.113.7",
            "store_errors:store",
        ]
        await rig.verifier.store.open()  # back again: the store alert resolves
        result = await rig.evaluator.evaluate(rig.clock() + 7200)
        assert "store_errors:store" in {a.id for a in result.resolved}


async def test_store_error_events_open_an_alert(rig_factory: Callable[..., Any]) -> None:
    async with rig_factory() as rig:
        now = rig.clock()
        await rig.verifier.store.add_events(
            [Event(type=EventType.STORE_ERROR.value, ts=now, id=new_event_id(now))]
        )
        opened = (await rig.evaluator.evaluate(now)).opened
        assert [a.id for a in opened] == ["store_errors:store"]


# -- once per incident, cooldown, restart ----------------------------------------------------


async def test_flapping_within_the_cooldown_is_one_incident(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    async with rig_factory(receiver, alert_ip_threshold=2, alert_cooldown=900) as rig:
        v, clock = rig.verifier, rig.clock

        async def burst() -> None:
            for i in range(3):
                await start(v, f"+4474001{i:05d}", "203.0.113.8")

        await burst()
        assert len((await rig.evaluator.evaluate(clock())).opened) == 1
        clock.advance(601)  # out of the 10-minute window: resolves
        assert len((await rig.evaluator.evaluate(clock())).resolved) == 1
        clock.advance(60)
        await burst()  # back within the cooldown: re-opened, nobody notified again
        result = await rig.evaluator.evaluate(clock())
        assert result.opened == [] and [a.id for a in result.open] == ["hot_ip:203.0.113.8"]
        assert result.open[0].details["flaps"] == 1
        clock.advance(601)
        assert (await rig.evaluator.evaluate(clock())).resolved == []  # quiet resolution
        clock.advance(1000)
        await burst()  # after the cooldown: a new incident
        assert len((await rig.evaluator.evaluate(clock())).opened) == 1
        await rig.dispatcher.join()
        assert [m["state"] for m in receiver.received] == ["opened", "resolved", "opened"]


async def test_a_restarted_engine_does_not_announce_open_alerts_again(
    rig_factory: Callable[..., Any],
) -> None:
    async with rig_factory(alert_ip_threshold=1) as rig:
        for i in range(2):
            await start(rig.verifier, f"+4474001{i:05d}", "203.0.113.9")
        assert len((await rig.evaluator.evaluate(rig.clock())).opened) == 1
        fresh = AlertEvaluator(rig.verifier, Dispatcher([]))
        result = await fresh.evaluate(rig.clock())
        assert result.opened == [] and [a.id for a in result.open] == ["hot_ip:203.0.113.9"]
        rig.clock.advance(700)
        assert [a.id for a in (await fresh.evaluate(rig.clock())).resolved] == [
            "hot_ip:203.0.113.9"
        ]


async def test_admission_pressure_names_the_scope_within_one_evaluation(
    rig_factory: Callable[..., Any],
) -> None:
    """A pumped block: once five starts are refused by its admission bucket, the next
    evaluation (every 30 s) opens one alert with the figures."""
    async with rig_factory(admission_block_4="3/12h", alert_admission_threshold=5) as rig:
        sent = [await start(rig.verifier, f"+44740091{i:04d}", ip(i)) for i in range(7)]
        assert sent == [True] * 3 + [False] * 4
        assert (await rig.evaluator.evaluate(rig.clock())).opened == []
        assert not await start(rig.verifier, "+447400919999", ip(9))
        [alert] = (await rig.evaluator.evaluate(rig.clock())).opened
        assert alert.id == "admission_pressure:block +44740091"
        assert {k: v for k, v in alert.details.items() if k != "notified"} == {
            "scope": "block +44740091",
            "refused": 5,
            "challenged": 0,
            "unconverted": 3,
        }
        rig.clock.advance(rig.verifier.settings.alert_hot_window + 1)
        assert [a.id for a in (await rig.evaluator.evaluate(rig.clock())).resolved] == [alert.id]
