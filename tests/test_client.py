"""otpguard.Client and otpguard.AsyncClient against a real ``otpguard serve`` subprocess.

Codes are read from the server's file outbox, the way a phone would receive them.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from otpguard.client import (
    AsyncClient,
    CheckOutcome,
    Client,
    DeliveryFailed,
    Unreachable,
    VerificationInfo,
)
from otpguard.errors import (
    ConfigError,
    Conflict,
    DeliveryError,
    DestinationRefused,
    InvalidEmailAddress,
    InvalidPhoneNumber,
    InvalidRequest,
    NotFound,
    OtpguardError,
    RateLimited,
    Unauthorized,
)
from otpguard.models import Channel, Status
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from .conftest import make_settings
from .serverproc import Server, fresh_number, otpguard_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with otpguard_server(tmp_path_factory.mktemp("client"), blocklist="+447400999999") as running:
        yield running


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No resend cooldown, so resends can be tested without waiting."""
    with otpguard_server(tmp_path_factory.mktemp("quick"), resend_cooldown="0") as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.base_url, server.api_key) as c:
        yield c


def wrong(code: str) -> str:
    return str((int(code) + 1) % 10 ** len(code)).zfill(len(code))


def test_start_then_check_approves_exactly_once(server: Server, client: Client) -> None:
    to = fresh_number()
    v = client.start(to, "sms", client_ip="198.51.100.1")
    assert isinstance(v, VerificationInfo)
    assert v.status is Status.PENDING and v.pending
    assert v.channel is Channel.SMS
    assert v.id.startswith("VE")
    assert to not in v.to and v.to.endswith(to[-4:])  # masked
    assert v.sends == 1
    assert v.expires_at > v.created_at
    assert v.expires_at.tzinfo is not None and v.expires_at > datetime.now(UTC)

    code = server.last_code(v.id)
    bad = client.check(wrong(code), verification_id=v.id, client_ip="198.51.100.1")
    assert bad == CheckOutcome(id=v.id, status=Status.PENDING, valid=False, attempts_remaining=4)

    good = client.check(code, verification_id=v.id, client_ip="198.51.100.1")
    assert good.valid is True and good.status is Status.APPROVED

    again = client.check(code, verification_id=v.id, client_ip="198.51.100.1")
    assert again.valid is False and again.status is Status.APPROVED
    assert client.get(v.id).status is Status.APPROVED


def test_check_by_number(server: Server, client: Client) -> None:
    to = fresh_number()
    v = client.start(to, client_ip="198.51.100.2")
    result = client.check(server.last_code(v.id), to=to, client_ip="198.51.100.2")
    assert result.valid and result.id == v.id


def test_a_transaction_code_approves_only_its_payment(server: Server, client: Client) -> None:
    pay = {"purpose": "transaction", "amount": "25", "currency": "GBP", "payee": "Acme Ltd"}
    v = client.start(fresh_number(), client_ip="198.51.100.3", **pay)
    assert (v.purpose, v.amount, v.currency, v.payee) == ("transaction", "25.00", "GBP", "Acme Ltd")
    code = server.last_code(v.id)
    other = client.check(
        code, verification_id=v.id, client_ip="198.51.100.3", **{**pay, "amount": "2.50"}
    )
    assert (other.valid, other.attempts_remaining) == (False, 4)
    assert not client.check(code, verification_id=v.id, client_ip="198.51.100.3").valid
    assert client.check(code, verification_id=v.id, client_ip="198.51.100.3", **pay).valid
    assert client.get(v.id).purpose == "transaction"
    with pytest.raises(InvalidRequest, match="together"):
        client.start(fresh_number(), purpose="transaction", amount="25", payee="Acme Ltd")
    plain = client.start(fresh_number(), client_ip="198.51.100.3")
    assert (plain.purpose, plain.amount, plain.payee) == ("login", None, None)


def test_email_channel(server: Server, client: Client) -> None:
    to = f"Jo.{fresh_number()[-6:]}@Example.com"  # this run's own mailbox
    v = client.start(to, "email", client_ip="198.51.100.3")
    assert v.channel is Channel.EMAIL and v.to == "j***@e***.com"
    code = server.last_code(v.id)
    assert not client.check(wrong(code), verification_id=v.id, client_ip="198.51.100.3").valid
    with pytest.raises(NotFound):  # every failure by address is the same 404
        client.check(wrong(code), to=to.lower(), client_ip="198.51.100.3")
    assert client.check(code, to=to, client_ip="198.51.100.3").valid
    with pytest.raises(DestinationRefused) as err:
        client.start("jo@mailinator.com", Channel.EMAIL)
    assert err.value.reason == "disposable_domain"
    with pytest.raises(InvalidEmailAddress):
        client.start("Jo <jo@example.com>", "email")


def test_check_needs_exactly_one_of_id_or_to(client: Client) -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        client.check(code="123456")
    with pytest.raises(InvalidRequest, match="exactly one"):
        client.check("123456", verification_id="VE00", to=fresh_number())


def test_cancel_then_resend_is_a_conflict(server: Server, client: Client) -> None:
    v = client.start(fresh_number(), client_ip="198.51.100.3")
    canceled = client.cancel(v.id)
    assert canceled.status is Status.CANCELED and canceled.id == v.id
    with pytest.raises(Conflict) as info:
        client.resend(v.id, client_ip="198.51.100.3")
    assert info.value.reason == "canceled"
    late = client.check(server.last_code(v.id), verification_id=v.id, client_ip="198.51.100.3")
    assert late.valid is False and late.status is Status.CANCELED


def test_early_resend_is_rate_limited_by_the_cooldown(client: Client) -> None:
    v = client.start(fresh_number(), client_ip="198.51.100.4")
    before = time.time()
    with pytest.raises(RateLimited) as info:
        client.resend(v.id, client_ip="198.51.100.4")
    after = time.time()
    assert info.value.rule == "cooldown"
    # The wait the server computed, bracketed by the wall clock around the call (the
    # API shows resend_available_at truncated to the second).
    available = v.resend_available_at.timestamp()
    assert (
        math.ceil(available - after) <= info.value.retry_after <= math.ceil(available + 1 - before)
    )
    assert info.value.code == "rate_limited" and info.value.status == 429


def test_resend_replaces_the_code(quick_server: Server) -> None:
    with Client(quick_server.base_url, quick_server.api_key) as c:
        v = c.start(fresh_number(), client_ip="198.51.100.5")
        first = quick_server.last_code(v.id)
        again = c.resend(v.id, client_ip="198.51.100.5")
        assert again.id == v.id and again.sends == 2
        second = quick_server.last_code(v.id)
        assert second != first
        assert c.check(first, verification_id=v.id, client_ip="198.51.100.5").valid is False
        assert c.check(second, verification_id=v.id, client_ip="198.51.100.5").valid is True


def test_per_number_limit_raises_rate_limited_with_rule_and_retry_after(client: Client) -> None:
    to = fresh_number()
    first_before = time.time()
    for i in range(3):  # limit_phone defaults to 3/10m
        client.start(to, client_ip=f"198.51.100.{10 + i}")
        if i == 0:
            first_after = time.time()
    before = time.time()
    with pytest.raises(RateLimited) as info:
        client.start(to, client_ip="198.51.100.20")
    after = time.time()
    assert info.value.rule == "phone"
    # Room comes back when the first send leaves the 10-minute window.
    assert (
        math.ceil(first_before + 600 - after)
        <= info.value.retry_after
        <= math.ceil(first_after + 600 - before)
    )


def test_destination_refused_carries_the_reason(client: Client) -> None:
    with pytest.raises(DestinationRefused) as info:
        client.start("+12025550123", client_ip="198.51.100.30")  # US: not in allowed_countries
    assert info.value.reason == "country_not_allowed"
    with pytest.raises(DestinationRefused) as blocked:
        client.start("+447400999999", client_ip="198.51.100.30")
    assert blocked.value.reason == "blocklisted"


def test_invalid_number_and_unknown_ids(client: Client) -> None:
    with pytest.raises(InvalidPhoneNumber):
        client.start("12", client_ip="198.51.100.31")
    with pytest.raises(NotFound):
        client.get("VE" + "0" * 32)
    with pytest.raises(NotFound):
        client.cancel("../../healthz")  # quoted into one path segment, not a traversal
    with pytest.raises(InvalidRequest):
        client.start(fresh_number(), "carrier-pigeon", client_ip="198.51.100.31")


def test_wrong_api_key_is_unauthorized(server: Server) -> None:
    with Client(server.base_url, "not-a-key") as c, pytest.raises(Unauthorized):
        c.start(fresh_number())


def test_missing_api_key_is_a_clear_configuration_error(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTPGUARD_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="api-keys create"):
        Client(server.base_url)
    with pytest.raises(ConfigError, match="http"):
        Client("localhost:8000", "key")


def test_url_and_key_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTPGUARD_URL", server.base_url + "/")
    monkeypatch.setenv("OTPGUARD_API_KEY", server.api_key)
    with Client() as c:
        assert c.base_url == server.base_url
        assert c.start(fresh_number(), client_ip="198.51.100.32").pending


def test_unreachable_server_raises_unreachable_with_the_url() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with Client(url, "key") as c, pytest.raises(Unreachable) as info:
        c.start(fresh_number())
    assert url in str(info.value) and "connection failed" in str(info.value)
    assert info.value.code == "unreachable"


def test_a_server_that_does_not_answer_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Client(url, "key", timeout=0.3) as c, pytest.raises(Unreachable) as info:
            c.get("VE00")
    assert "did not answer in time" in str(info.value)


def test_something_that_is_not_otpguard_is_reported(server: Server) -> None:
    # otpguard's own JSON 404 for an unknown endpoint (a wrong base path)
    with Client(server.base_url + "/nothing-here", server.api_key) as c, pytest.raises(NotFound):
        c.get("VE00")

    def not_otpguard(request: httpx.Request) -> httpx.Response:  # some other web server
        return httpx.Response(500, text="Internal Server Error")

    mock = httpx.MockTransport(not_otpguard)
    with (
        Client("http://elsewhere", "key", transport=mock) as c,
        pytest.raises(OtpguardError) as info,
    ):
        c.get("VE00")
    assert info.value.code == "bad_response" and info.value.status == 500
    assert "without an otpguard error body" in str(info.value)


async def test_async_client_full_flow(server: Server) -> None:
    async with AsyncClient(server.base_url, server.api_key) as c:
        to = fresh_number()
        v = await c.start(to, Channel.SMS, client_ip="198.51.100.40")
        assert (await c.get(v.id)).status is Status.PENDING
        with pytest.raises(RateLimited):
            await c.resend(v.id, client_ip="198.51.100.40")
        code = server.last_code(v.id)
        assert (
            await c.check(wrong(code), verification_id=v.id, client_ip="198.51.100.40")
        ).valid is False
        assert (await c.check(code, verification_id=v.id, client_ip="198.51.100.40")).valid is True
        v2 = await c.start(fresh_number(), client_ip="198.51.100.40")
        assert (await c.cancel(v2.id)).status is Status.CANCELED


async def test_async_client_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AsyncClient(f"http://127.0.0.1:{port}", "key") as c:
        with pytest.raises(Unreachable):
            await c.start(fresh_number())


async def test_delivery_failure_becomes_delivery_failed(tmp_path: Path) -> None:
    """The file transport cannot fail, so this one runs the real app in-process with a
    memory transport that refuses to deliver, reached through the same AsyncClient."""
    from otpguard.apikeys import create_api_key

    settings = make_settings(tmp_path)
    transport = MemoryTransport(
        fail_with=DeliveryError("unroutable", provider_code=21612, retryable=False)
    )
    verifier = Verifier(settings, store_from_url(settings.store_url), transport)
    app = create_app(settings, verifier, background=False)
    async with app.router.lifespan_context(app):
        _, key = await create_api_key(verifier.store, "t", ("verify",), 0.0)
        asgi = httpx.ASGITransport(app=app, client=("203.0.113.60", 1))
        async with AsyncClient("http://testserver", key, transport=asgi) as c:
            with pytest.raises(DeliveryFailed) as info:
                await c.start(fresh_number(), client_ip="203.0.113.60")
    assert isinstance(info.value, DeliveryError)
    assert info.value.reason == "unroutable"
    assert info.value.provider_code == 21612
    assert info.value.status == 502
