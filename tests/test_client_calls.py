"""otpguard.Client without a server: what each call sends, and how answers are read.

``httpx.MockTransport`` records the requests and answers as the API would; the
full flow against a real ``otpguard serve`` is in ``test_client.py``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from otpguard import errors
from otpguard.client import AsyncClient, CheckOutcome, Client, DeliveryFailed, error_from_response
from otpguard.errors import InvalidRequest, OtpguardError
from otpguard.models import Status

CHECKED = {"id": "VE01", "status": "approved", "valid": True, "attempts_remaining": 4}
STARTED = {
    "id": "VE01",
    "to": "+44******3456",
    "channel": "sms",
    "status": "pending",
    "created_at": "2026-01-01T00:00:00Z",
    "expires_at": "2026-01-01T00:05:00Z",
    "resend_available_at": "2026-01-01T00:00:30Z",
    "attempts_remaining": 5,
    "sends": 1,
    "purpose": "transaction",
    "amount": {"value": "25.00", "currency": "GBP"},
    "payee": "Acme Ltd",
}
PAYMENT = {"purpose": "transaction", "amount": "25.00", "currency": "GBP", "payee": "Acme Ltd"}


class Api:
    """A stand-in server: records each request's method, path and JSON body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        checking = request.url.path.endswith("/check")
        return httpx.Response(200, json=CHECKED if checking else STARTED)

    @property
    def last_body(self) -> Any:
        return self.requests[-1][2]


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with Client("http://otpguard.test", "key", transport=httpx.MockTransport(api)) as c:
        yield c


def test_check_takes_the_code_first_as_the_verifier_does(api: Api, client: Client) -> None:
    outcome = client.check("482913", verification_id="VE01", client_ip="203.0.113.7")
    assert outcome == CheckOutcome("VE01", Status.APPROVED, valid=True, attempts_remaining=4)
    assert api.requests == [
        (
            "POST",
            "/v1/verifications/check",
            {"id": "VE01", "code": "482913", "client_ip": "203.0.113.7"},
        )
    ]
    client.check("482913", to="+447400123456", **PAYMENT)
    assert api.last_body == {
        "to": "+447400123456",
        "code": "482913",
        "purpose": "transaction",
        "amount": {"value": "25.00", "currency": "GBP"},
        "payee": "Acme Ltd",
    }
    client.check(code="482913", to="+447400123456")  # the code by keyword: the same call
    assert api.last_body == {"to": "+447400123456", "code": "482913"}


def test_the_old_order_still_works_and_warns_at_the_caller(api: Api, client: Client) -> None:
    with pytest.warns(DeprecationWarning, match=r"check\(code, verification_id=") as warned:
        client.check("VE01", code="482913", client_ip="203.0.113.7")
    assert warned[0].filename == __file__
    assert api.last_body == {"id": "VE01", "code": "482913", "client_ip": "203.0.113.7"}


def test_a_check_names_its_code_once_and_one_verification(client: Client) -> None:
    with pytest.raises(TypeError, match="needs the code"):
        client.check(verification_id="VE01")
    with pytest.raises(TypeError, match="code once"):
        client.check("VE01", code="482913", verification_id="VE02")
    with pytest.raises(InvalidRequest, match="exactly one"):
        client.check("482913")
    with pytest.raises(InvalidRequest, match="exactly one"):
        client.check("482913", verification_id="VE01", to="+447400123456")
    with pytest.raises(InvalidRequest, match="together"):
        client.check("482913", verification_id="VE01", amount="25.00")


def test_start_sends_only_what_was_given(api: Api, client: Client) -> None:
    v = client.start("+447400123456", client_ip="203.0.113.7", locale="fr", **PAYMENT)
    assert (v.id, v.pending, v.amount, v.currency, v.payee) == (
        "VE01",
        True,
        "25.00",
        "GBP",
        "Acme Ltd",
    )
    assert api.requests[-1][:2] == ("POST", "/v1/verifications")
    assert api.last_body == {
        "to": "+447400123456",
        "channel": "sms",
        "client_ip": "203.0.113.7",
        "locale": "fr",
        "purpose": "transaction",
        "amount": {"value": "25.00", "currency": "GBP"},
        "payee": "Acme Ltd",
    }


async def test_the_async_client_has_the_same_methods_awaited(api: Api) -> None:
    transport = httpx.MockTransport(api)
    async with AsyncClient("http://otpguard.test", "key", transport=transport) as c:
        outcome = await c.check("482913", verification_id="VE01")
        assert outcome.valid and api.last_body == {"id": "VE01", "code": "482913"}
        with pytest.warns(DeprecationWarning) as warned:
            pending = c.check("VE01", code="482913")
        assert warned[0].filename == __file__
        await pending
        assert api.last_body == {"id": "VE01", "code": "482913"}
    for name in ("start", "resend", "check", "cancel", "get"):
        sync, asyn = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync) == inspect.signature(asyn), name


def _error_tree() -> list[type[OtpguardError]]:
    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, OtpguardError)
        and not cls.__name__.startswith("_")
    ]


def _example(cls: type[OtpguardError]) -> OtpguardError:
    if cls is errors.RateLimited:
        return cls("per_number", 42)
    if cls in (errors.DestinationRefused, errors.Conflict):
        return cls("blocklisted")
    if cls is errors.ChallengeRequired:
        return cls({"provider": "turnstile", "site_key": "0x4AAA"}, scope="country")
    if cls is errors.DeliveryError:
        return cls("invalid_number", provider_code=21211)
    return cls("a message")


@pytest.mark.parametrize("cls", _error_tree(), ids=lambda cls: cls.__name__)
def test_every_error_the_api_answers_comes_back_as_its_class(cls: type[OtpguardError]) -> None:
    sent = _example(cls)
    body = {"error": {"code": sent.code, "message": sent.message, **sent.details()}}
    got = error_from_response(httpx.Response(sent.status, json=body))
    if cls is errors.OtpguardError:  # the root's code is not a class of its own
        assert type(got) is OtpguardError and got.code == "error"
        return
    assert isinstance(got, DeliveryFailed if cls is errors.DeliveryError else cls)
    assert (got.code, got.status, got.message, got.details()) == (
        sent.code,
        sent.status,
        sent.message,
        sent.details(),
    )


def test_an_unknown_code_or_a_foreign_body_is_still_an_otpguard_error() -> None:
    newer = {"error": {"code": "brand_new", "message": "from a newer server"}}
    got = error_from_response(httpx.Response(418, json=newer))
    assert (type(got), got.code, got.status, got.message) == (
        OtpguardError,
        "brand_new",
        418,
        "from a newer server",
    )
    foreign = error_from_response(httpx.Response(502, text="<html>Bad gateway</html>"))
    assert foreign.code == "bad_response" and "pointing at an otpguard server" in foreign.message
    assert "HTTP 502" in foreign.message


def test_statuses_come_from_the_class_that_declares_them() -> None:
    assert (errors.HttpsRequired.code, errors.HttpsRequired.status) == ("https_required", 403)
    assert (errors.InvalidPhoneNumber.status, errors.ConfigError.status) == (400, 500)
    assert errors.Conflict("canceled").message == "not allowed: verification is canceled"
    assert errors.DestinationRefused("blocklisted").details() == {"reason": "blocklisted"}
