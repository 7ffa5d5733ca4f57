"""/v2's PSD2 fields, Amount and Payee, driven by the unmodified twilio SDK: the code is
bound to them, its message names them, and a check must carry the same two."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import InvalidRequest
from otpguard.purpose import parse_display_amount
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE
from .test_verify_compat import VerifyServer, raises_twilio


@pytest.fixture
def server(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> Iterator[VerifyServer]:
    running = VerifyServer(settings_factory(), clock, outbox).__enter__()
    yield running
    running.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("€39.99", ("39.99", "EUR")),
        ("39.99€", ("39.99", "EUR")),
        ("£25", ("25.00", "GBP")),
        ("EUR 39.99", ("39.99", "EUR")),
        ("1500 JPY", ("1500", "JPY")),
    ],
)
def test_display_amounts(text: str, parsed: tuple[str, str]) -> None:
    assert parse_display_amount(text) == parsed


@pytest.mark.parametrize("text", ["$39.99", "39.99", "¥1500", "EUR39.99", "eur 39.99", "€-1"])
def test_display_amounts_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_display_amount(text)


def test_sdk_amount_and_payee_bind_the_code(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    v = svc.verifications.create(to=UK_MOBILE, channel="sms", amount="€39.99", payee="Acme Inc")
    assert (v.status, v.amount, v.payee) == ("pending", "EUR 39.99", "Acme Inc")
    message = outbox.sent_to(UK_MOBILE)[-1]
    assert "to pay EUR 39.99 to Acme Inc" in message.render_text()
    code = message.code

    for amount, payee in ((None, None), ("€40", "Acme Inc"), ("€39.99", "Acme Inc.")):
        kwargs = {"amount": amount, "payee": payee} if amount else {}
        check = svc.verification_checks.create(code=code, verification_sid=v.sid, **kwargs)
        assert (check.status, check.valid) == ("pending", False), (amount, payee)
    check = svc.verification_checks.create(
        code=code, verification_sid=v.sid, amount="39.99 EUR", payee="Acme Inc"
    )
    assert (check.status, check.valid, check.amount, check.payee) == (
        "approved", True, "EUR 39.99", "Acme Inc",
    )  # fmt: skip
    assert svc.verifications(v.sid).fetch().status == "approved"


def test_sdk_check_by_number_carries_amount_and_payee(
    server: VerifyServer, outbox: MemoryTransport
) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    svc.verifications.create(to=UK_MOBILE, channel="sms", amount="£25", payee="Acme Ltd")
    code = outbox.last_code(UK_MOBILE)
    err = raises_twilio(lambda: svc.verification_checks.create(code=code, to=UK_MOBILE))
    assert (err.status, err.code) == (404, 20404)
    check = svc.verification_checks.create(
        code=code, to=UK_MOBILE, amount="GBP 25.00", payee="Acme Ltd"
    )
    assert (check.status, check.valid) == ("approved", True)


def test_sdk_amount_and_payee_refusals(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    err = raises_twilio(lambda: svc.verifications.create(to=UK_MOBILE, channel="sms", amount="€5"))
    assert (err.status, err.code) == (400, 60206)
    err = raises_twilio(
        lambda: svc.verifications.create(to=UK_MOBILE, channel="sms", payee="Acme Inc")
    )
    assert (err.status, err.code) == (400, 60206)
    for amount, payee, param in (("$5", "Acme", "Amount"), ("€5", "acme.com", "Payee")):
        err = raises_twilio(
            lambda a=amount, p=payee: svc.verifications.create(
                to=UK_MOBILE, channel="sms", amount=a, payee=p
            )
        )
        assert (err.status, err.code) == (400, 60200) and f"Invalid parameter: {param}" in err.msg
    assert outbox.sent_to(UK_MOBILE) == []


def test_sdk_a_create_for_another_payment_is_a_new_verification(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    """A re-send keeps the pending verification's binding, so only a create for the
    same payment re-sends on it; another amount is another verification and code."""
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    first = svc.verifications.create(to=UK_MOBILE, channel="sms", amount="£25", payee="Acme Ltd")
    clock.advance(31)  # past the resend cooldown
    again = svc.verifications.create(to=UK_MOBILE, channel="sms", amount="£25", payee="Acme Ltd")
    assert again.sid == first.sid
    clock.advance(61)
    other = svc.verifications.create(to=UK_MOBILE, channel="sms", amount="£99", payee="Acme Ltd")
    assert other.sid != first.sid and other.amount == "GBP 99.00"
    assert "to pay GBP 99.00 to Acme Ltd" in outbox.sent_to(UK_MOBILE)[-1].render_text()
