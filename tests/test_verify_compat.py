"""The Twilio Verify-compatible /v2 API, driven by the unmodified official twilio SDK.

The SDK talks to a real uvicorn server on a free 127.0.0.1 port, in a thread,
serving ``create_app(settings, Verifier(..., MemoryTransport, clock=ManualClock))``.
The only change to the SDK is the one a migrating app makes: the Verify domain's
base URL. Codes are read from the memory outbox, as a phone would.
Raw wire shapes (error bodies, headers) are checked with httpx on the ASGI app.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvicorn
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.stores.base import EventQuery
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from .conftest import UK_MOBILE, ApiClient
from .dump import dump_store

T = TypeVar("T")

UK_LANDLINE = "+442079460123"
US_MOBILE = "+12025550123"


class _Uvicorn(uvicorn.Server):
    """uvicorn that says when it is listening and which loop it serves from."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.loop = asyncio.get_running_loop()
        self.ready.set()


class VerifyServer:
    """otpguard on 127.0.0.1:<free port>, with an API key and the SDK pointed at it."""

    def __init__(self, settings: Settings, clock: ManualClock, outbox: MemoryTransport) -> None:
        self.clock = clock
        self.outbox = outbox
        self.verifier = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
        app = create_app(settings, self.verifier, clock=clock, background=False)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            lifespan="on",
            loop="asyncio",
            http="h11",
            ws="none",
            log_config=None,
            access_log=False,
        )
        self._server = _Uvicorn(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> VerifyServer:
        self._thread.start()
        assert self._server.ready.wait(timeout=30), "the server did not start"
        _, self.key = self.run(create_api_key(self.verifier.store, "sdk", ("verify",), 0.0))
        self.key_id = "og_" + self.key.split("_")[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop (where its store lives)."""
        assert self._server.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._server.loop).result(timeout=30)

    def client(self, username: str | None = None, password: str | None = None) -> Client:
        """The official SDK, as a migrated app builds it: one base URL changed."""
        client = Client(username or self.key_id, password or self.key)
        client.verify.base_url = self.url
        return client

    def other_key_client(self) -> Client:
        """The SDK with a second API key of its own: another tenant."""
        _, key = self.run(create_api_key(self.verifier.store, "other", ("verify",), 0.0))
        return self.client("og_" + key.split("_")[1], key)

    def event_types(self) -> list[str]:
        return [e.type for e in self.run(self.verifier.store.list_events(EventQuery(limit=500)))]


@pytest.fixture
def server_factory(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> Iterator[Callable[..., VerifyServer]]:
    servers: list[VerifyServer] = []

    def factory(**overrides: Any) -> VerifyServer:
        server = VerifyServer(settings_factory(**overrides), clock, outbox).__enter__()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def server(server_factory: Callable[..., VerifyServer]) -> VerifyServer:
    return server_factory()


def raises_twilio(call: Callable[[], object]) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as info:
        call()
    return info.value


def last_body(client: Client) -> str:
    http = client.http_client
    assert isinstance(http, TwilioHttpClient)
    response = http._test_only_last_response
    assert response is not None
    return str(response.text)


# -- the SDK walkthrough ----------------------------------------------------------------


def test_sdk_create_check_wrong_right_again_fetch(
    server: VerifyServer, outbox: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    client = server.client()
    service = client.verify.v2.services.create(friendly_name="Acme Shop", code_length=7)
    assert service.sid is not None and service.sid.startswith("VA") and len(service.sid) == 34
    assert service.friendly_name == "Acme Shop" and service.code_length == 7
    fetched = client.verify.v2.services(service.sid).fetch()
    assert (fetched.sid, fetched.friendly_name, fetched.code_length) == (
        service.sid,
        "Acme Shop",
        7,
    )

    verifications = client.verify.v2.services(service.sid)
    v = verifications.verifications.create(to=UK_MOBILE, channel="sms")
    assert v.sid is not None and v.sid.startswith("VE") and len(v.sid) == 34
    assert (v.service_sid, v.to, v.channel, v.status, v.valid) == (
        service.sid,
        UK_MOBILE,
        "sms",
        "pending",
        False,
    )
    assert v.account_sid is not None and v.account_sid.startswith("AC")
    assert v.url == f"{server.url}/v2/Services/{service.sid}/Verifications/{v.sid}"
    assert v.date_created is not None and v.lookup == {
        "carrier": {
            "error_code": None,
            "name": None,
            "mobile_country_code": None,
            "mobile_network_code": None,
            "type": "mobile",
        }
    }
    message = outbox.sent_to(UK_MOBILE)[-1]
    code = message.code
    assert message.service_name == "Acme Shop" and len(code) == 7
    assert message.verification_id == v.sid
    bodies = [last_body(client)]

    wrong = "0000000" if code != "0000000" else "1111111"
    check = verifications.verification_checks.create(code=wrong, verification_sid=v.sid)
    bodies.append(last_body(client))
    assert (check.sid, check.status, check.valid) == (v.sid, "pending", False)

    check = verifications.verification_checks.create(code=code, verification_sid=v.sid)
    bodies.append(last_body(client))
    assert (check.sid, check.status, check.valid, check.to) == (v.sid, "approved", True, UK_MOBILE)

    again = raises_twilio(
        lambda: verifications.verification_checks.create(code=code, verification_sid=v.sid)
    )
    bodies.append(last_body(client))
    assert (again.status, again.code) == (404, 20404)

    fetched_v = verifications.verifications(v.sid).fetch()
    bodies.append(last_body(client))
    assert (fetched_v.status, fetched_v.valid) == ("approved", True)

    for body in bodies:
        assert code not in body
    assert code not in caplog.text
    types = server.event_types()
    for expected in ("verification.started", "verification.sent", "check.failed", "check.passed"):
        assert expected in types


def test_sdk_check_by_number_over_a_call(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    service = client.verify.v2.services.create(friendly_name="Acme")
    assert service.code_length == 6  # otpguard's default, not Twilio's
    svc = client.verify.v2.services(service.sid)
    v = svc.verifications.create(to=UK_MOBILE, channel="call", locale="fr")
    assert v.channel == "call"
    message = outbox.sent_to(UK_MOBILE)[-1]
    assert message.channel.value == "voice" and message.locale == "fr"
    check = svc.verification_checks.create(to=UK_MOBILE, code=message.code)
    assert (check.sid, check.status, check.valid, check.channel) == (
        v.sid,
        "approved",
        True,
        "call",
    )


def test_sdk_custom_friendly_name_is_used_in_the_message(
    server: VerifyServer, outbox: MemoryTransport
) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    svc.verifications.create(to=UK_MOBILE, channel="whatsapp", custom_friendly_name="Acme Pay")
    message = outbox.sent_to(UK_MOBILE)[-1]
    assert message.service_name == "Acme Pay" and message.channel.value == "whatsapp"


def test_sdk_cancel_then_check_and_fetch(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    v = svc.verifications.create(to=UK_MOBILE, channel="sms")
    code = outbox.last_code(UK_MOBILE)
    canceled = svc.verifications(v.sid).update(status="canceled")
    assert (canceled.sid, canceled.status) == (v.sid, "canceled")
    err = raises_twilio(lambda: svc.verification_checks.create(code=code, verification_sid=v.sid))
    assert (err.status, err.code) == (404, 20404)
    err = raises_twilio(lambda: svc.verification_checks.create(code=code, to=UK_MOBILE))
    assert (err.status, err.code) == (404, 20404)
    assert svc.verifications(v.sid).fetch().status == "canceled"
    err = raises_twilio(lambda: svc.verifications(v.sid).update(status="canceled"))
    assert (err.status, err.code) == (404, 20404)
    assert "verification.canceled" in server.event_types()
    assert "check.passed" not in server.event_types()


def test_sdk_status_approved_is_refused_and_changes_nothing(
    server: VerifyServer, outbox: MemoryTransport
) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    v = svc.verifications.create(to=UK_MOBILE, channel="sms")
    err = raises_twilio(lambda: svc.verifications(v.sid).update(status="approved"))
    assert (err.status, err.code) == (400, 60200)
    assert "Status" in err.msg
    assert svc.verifications(v.sid).fetch().status == "pending"
    check = svc.verification_checks.create(code=outbox.last_code(UK_MOBILE), verification_sid=v.sid)
    assert check.status == "approved"  # still approvable the only way: with its code


def test_sdk_max_check_attempts(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    v = svc.verifications.create(to=UK_MOBILE, channel="sms")
    code = outbox.last_code(UK_MOBILE)
    wrong = "000000" if code != "000000" else "111111"
    statuses = [
        svc.verification_checks.create(code=wrong, verification_sid=v.sid).status for _ in range(5)
    ]
    assert statuses == ["pending"] * 4 + ["max_attempts_reached"]
    err = raises_twilio(lambda: svc.verification_checks.create(code=code, verification_sid=v.sid))
    assert (err.status, err.code) == (429, 60202)
    assert svc.verifications(v.sid).fetch().status == "max_attempts_reached"
    assert "verification.locked" in server.event_types()


def test_sdk_max_send_attempts_then_the_window_passes(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    first = svc.verifications.create(to=UK_MOBILE, channel="sms")
    # Each create while it is pending re-sends on it, once its cooldown (30 s, then
    # 60 s) has passed; limit_phone allows 3 messages per 10 minutes.
    for wait in (30, 60):
        clock.advance(wait)
        assert svc.verifications.create(to=UK_MOBILE, channel="sms").sid == first.sid
    clock.advance(120)
    err = raises_twilio(lambda: svc.verifications.create(to=UK_MOBILE, channel="sms"))
    assert (err.status, err.code) == (429, 60203)
    assert len(outbox.sent_to(UK_MOBILE)) == 3
    assert "request.refused" in server.event_types()
    clock.advance(600)
    again = svc.verifications.create(to=UK_MOBILE, channel="sms")
    assert again.status == "pending" and again.sid != first.sid  # the first expired
    assert len(outbox.sent_to(UK_MOBILE)) == 4


def test_sdk_expired_after_five_minutes(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    v = svc.verifications.create(to=UK_MOBILE, channel="sms")
    code = outbox.last_code(UK_MOBILE)
    clock.advance(300)
    err = raises_twilio(lambda: svc.verification_checks.create(code=code, verification_sid=v.sid))
    assert (err.status, err.code) == (404, 20404)
    assert svc.verifications(v.sid).fetch().status == "expired"


@pytest.mark.parametrize(
    ("to", "channel", "code"),
    [
        (UK_LANDLINE, "sms", 60205),  # a landline cannot take an SMS
        (US_MOBILE, "sms", 60605),  # allowed_countries is GB by default
    ],
)
def test_sdk_destination_refusals(
    server: VerifyServer, outbox: MemoryTransport, to: str, channel: str, code: int
) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    err = raises_twilio(lambda: svc.verifications.create(to=to, channel=channel))
    assert (err.status, err.code) == (403, code)
    assert outbox.outbox == []


def test_sdk_fraud_rule_refusal(
    server_factory: Callable[..., VerifyServer], outbox: MemoryTransport
) -> None:
    server = server_factory(fraud_sequential_threshold=3)
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    numbers = [f"+4474001234{n:02d}" for n in range(10, 13)]
    for to in numbers[:2]:
        svc.verifications.create(to=to, channel="sms", device_ip="203.0.113.9")
    # The third distinct number of one range from one IP: someone walking the range.
    err = raises_twilio(
        lambda: svc.verifications.create(to=numbers[2], channel="sms", device_ip="203.0.113.9")
    )
    assert (err.status, err.code) == (403, 60410)
    assert "fraud:sequential_numbers" in err.msg
    assert len(outbox.outbox) == 2


def test_sdk_invalid_parameters(server: VerifyServer) -> None:
    client = server.client()
    err = raises_twilio(lambda: client.verify.v2.services.create(friendly_name="x", code_length=4))
    assert (err.status, err.code) == (400, 60200) and "CodeLength" in err.msg
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: svc.verifications.create(to="not a number", channel="sms"), "To"),
        (lambda: svc.verifications.create(to=UK_MOBILE, channel="fax"), "Channel"),
        (lambda: svc.verifications.create(to=UK_MOBILE, channel="email"), "To"),
        (
            lambda: svc.verifications.create(to=UK_MOBILE, channel="sms", custom_code="123456"),
            "CustomCode",
        ),
        (lambda: svc.verification_checks.create(code="12ab56", to=UK_MOBILE), "Code"),
    ]
    for call, param in cases:
        err = raises_twilio(call)
        assert (err.status, err.code) == (400, 60200)
        assert f"Invalid parameter: {param}" in err.msg


def test_sdk_services_are_separate(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    a = client.verify.v2.services(client.verify.v2.services.create(friendly_name="A").sid)
    b = client.verify.v2.services(client.verify.v2.services.create(friendly_name="B").sid)
    v = a.verifications.create(to=UK_MOBILE, channel="sms")
    code = outbox.last_code(UK_MOBILE)
    for call in (
        lambda: b.verifications(v.sid).fetch(),
        lambda: b.verification_checks.create(code=code, verification_sid=v.sid),
        lambda: b.verification_checks.create(code=code, to=UK_MOBILE),
    ):
        err = raises_twilio(call)
        assert (err.status, err.code) == (404, 20404)
    assert a.verification_checks.create(code=code, verification_sid=v.sid).valid is True


def test_sdk_delete_service(server: VerifyServer) -> None:
    client = server.client()
    sid = client.verify.v2.services.create(friendly_name="Acme").sid
    updated = client.verify.v2.services(sid).update(friendly_name="Acme 2", code_length=8)
    assert (updated.friendly_name, updated.code_length) == ("Acme 2", 8)
    assert client.verify.v2.services(sid).delete() is True
    err = raises_twilio(lambda: client.verify.v2.services(sid).fetch())
    assert (err.status, err.code) == (404, 20404)


def test_sdk_wrong_credentials(server: VerifyServer) -> None:
    other_id = "og_" + "0" * 12
    for username, password in (
        (server.key_id, server.key[:-1] + ("A" if server.key[-1] != "A" else "B")),
        (other_id, server.key),  # the right key under another id
        (server.key, server.key),
        ("AC" + "0" * 32, "auth-token"),
    ):
        client = server.client(username, password)
        err = raises_twilio(lambda c=client: c.verify.v2.services.create(friendly_name="x"))
        assert (err.status, err.code) == (401, 20003)


# -- the wire, with httpx on the ASGI app -------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def twilio_auth(api: ApiClient) -> dict[str, str]:
    return basic("og_" + api.key.split("_")[1], api.key)


async def test_errors_are_twilio_shaped(api: ApiClient) -> None:
    r = await api.http.post("/v2/Services", data={"FriendlyName": "x"})
    assert r.status_code == 401
    assert r.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert r.headers["www-authenticate"].startswith("Basic")
    auth = twilio_auth(api)
    r = await api.http.get("/v2/Services/VA" + "0" * 32, headers=auth)
    assert r.status_code == 404 and r.json()["code"] == 20404
    assert r.json()["message"] == f"The requested resource /Services/VA{'0' * 32} was not found"
    r = await api.http.get(f"/v2/Services/VA{'0' * 32}/Verifications/VE{'0' * 32}", headers=auth)
    assert r.status_code == 404 and r.json()["code"] == 20404
    r = await api.http.get("/v2/Services/VEnot-a-service-sid", headers=auth)
    assert r.status_code == 404 and r.json()["code"] == 20404
    r = await api.http.post("/v2/Services", headers=auth, json={"FriendlyName": "x"})
    assert r.status_code == 400 and r.json()["code"] == 60200
    r = await api.http.post(
        "/v2/Services",
        headers=auth,
        content=b"FriendlyName=a&FriendlyName=b",
    )
    assert r.status_code == 400 and r.json()["code"] == 60200
    assert r.headers["cache-control"] == "no-store"


async def test_send_limit_has_retry_after(api: ApiClient) -> None:
    auth = twilio_auth(api)
    r = await api.http.post("/v2/Services", headers=auth, data={"FriendlyName": "Acme"})
    assert r.status_code == 201
    sid = r.json()["sid"]
    statuses = []
    for _ in range(2):
        r = await api.http.post(
            f"/v2/Services/{sid}/Verifications",
            headers=auth,
            data={"To": UK_MOBILE, "Channel": "sms"},
        )
        statuses.append(r.status_code)
    assert statuses == [201, 429]  # a resend too soon: the cooldown
    assert r.json()["code"] == 60203 and int(float(r.headers["retry-after"])) == 30


async def test_v1_errors_keep_their_format(api: ApiClient) -> None:
    r = await api.post("/v1/verifications", json={"to": "nope"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_phone_number"
    r = await api.get("/v1/nothing")
    assert r.json() == {"error": {"code": "not_found", "message": "no such endpoint"}}


async def test_bearer_key_is_not_twilio_auth(api: ApiClient) -> None:
    r = await api.http.post("/v2/Services", headers=api.headers, data={"FriendlyName": "x"})
    assert r.status_code == 401 and r.json()["code"] == 20003


async def test_no_code_in_any_v2_response_or_log(
    api: ApiClient, outbox: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = twilio_auth(api)
    sid = (await api.http.post("/v2/Services", headers=auth, data={"FriendlyName": "A"})).json()[
        "sid"
    ]
    r = await api.http.post(
        f"/v2/Services/{sid}/Verifications", headers=auth, data={"To": UK_MOBILE, "Channel": "sms"}
    )
    vid = r.json()["sid"]
    code = outbox.last_code(UK_MOBILE)
    bodies = [r.text]
    for data in ({"Code": code, "VerificationSid": vid}, {"Code": code, "To": UK_MOBILE}):
        r = await api.http.post(f"/v2/Services/{sid}/VerificationCheck", headers=auth, data=data)
        bodies.append(r.text)
    bodies.append(
        (await api.http.get(f"/v2/Services/{sid}/Verifications/{vid}", headers=auth)).text
    )
    assert all(code not in b for b in bodies)
    assert code not in caplog.text
    assert code not in await dump_store(api.verifier.store)
