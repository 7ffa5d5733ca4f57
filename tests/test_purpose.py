"""Codes bound to their purpose: the rules of purpose.py, and the Verifier and /v1 API
holding a code to the purpose, amount and payee it was started for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpguard.clock import ManualClock
from otpguard.codes import Keyring, new_secret_hex
from otpguard.config import Settings
from otpguard.errors import InvalidRequest, NotFound
from otpguard.events import EventType
from otpguard.models import Channel, Status, Verification
from otpguard.purpose import DEFAULT, MINOR_UNITS, Binding, bind
from otpguard.service import Verifier, new_verification_id
from otpguard.stores import EventQuery
from otpguard.transports.base import Message
from otpguard.transports.memory import MemoryTransport
from otpguard.transports.twilio import voice_twiml

from .conftest import UK_MOBILE, ApiClient

PAY = {"purpose": "transaction", "amount": "25.00", "currency": "GBP", "payee": "Acme Ltd"}


def wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


# -- the rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "canonical"),
    [
        ("25", "GBP", "25.00"),
        ("25.5", "GBP", "25.50"),
        ("0025.00", "EUR", "25.00"),
        ("0.01", "USD", "0.01"),
        ("1500", "JPY", "1500"),
        ("1.250", "KWD", "1.250"),
        ("999999999999.99", "EUR", "999999999999.99"),
    ],
)
def test_amounts_take_one_canonical_form(amount: str, currency: str, canonical: str) -> None:
    b = bind("transaction", amount, currency, "Acme Ltd")
    assert (b.amount, b.currency) == (canonical, currency)
    assert b.display_amount == f"{currency} {canonical}"


@pytest.mark.parametrize(
    ("amount", "currency", "why"),
    [
        ("25.001", "GBP", "more decimals"),
        ("25.5", "JPY", "more decimals"),
        ("0", "GBP", "more than zero"),
        ("0.00", "EUR", "more than zero"),
        ("-5", "GBP", "decimal string"),
        ("+5", "GBP", "decimal string"),
        ("1e3", "GBP", "decimal string"),
        ("25,00", "EUR", "decimal string"),
        (" 25", "GBP", "decimal string"),
        ("25.", "GBP", "decimal string"),
        ("١٢", "GBP", "decimal string"),  # Arabic-Indic digits are not ASCII digits
        ("NaN", "GBP", "decimal string"),
        ("1234567890123", "GBP", "decimal string"),
        ("25.00", "gbp", "ISO 4217"),
        ("25.00", "XYZ", "ISO 4217"),
        ("25.00", "GB", "ISO 4217"),
    ],
)
def test_bad_amounts_are_refused(amount: str, currency: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        bind("transaction", amount, currency, "Acme Ltd")


@pytest.mark.parametrize(
    "payee",
    [
        "Acme Ltd",
        "Acme Ltd.",
        "St. John's Bakery",
        "Müller & Söhne (Berlin)",
        "Zoë-Anne O'Neil",
        "株式会社アクメ",
        "7-Eleven",
        "A" * 64,
    ],
)
def test_payees_accepted(payee: str) -> None:
    assert bind("transaction", "1", "EUR", payee).payee == payee


@pytest.mark.parametrize(
    "payee",
    [
        "",
        " Acme",
        "Acme ",
        "Acme  Ltd",
        "A" * 65,
        "acme.com",
        "www.acme.co.uk",
        "http://acme",
        "Acme <b>Ltd</b>",
        "pay@acme",
        "Acme\nLtd",
        "Acme\u202eLtd",  # right-to-left override
        "Acme\u200bLtd",  # zero-width space
        "Call 08001234567",
        "1234",
        "Acme!",
        "Acme\u20ddLtd",  # an enclosing mark
    ],
)
def test_payees_refused(payee: str) -> None:
    with pytest.raises(InvalidRequest, match="'payee'"):
        bind("transaction", "1", "EUR", payee)


def test_payees_are_nfc_normalised() -> None:
    composed = bind("transaction", "1", "EUR", "Zoë Ltd").payee
    decomposed = bind("transaction", "1", "EUR", "Zoe\u0308 Ltd").payee
    assert composed == decomposed == "Zoë Ltd"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("Login",), "'purpose'"),
        (("log in",), "'purpose'"),
        (("x" * 33,), "'purpose'"),
        (("",), "'purpose'"),
        (("transaction",), "needs 'amount'"),
        (("transaction", "25", "GBP"), "needs 'amount'"),
        (("transaction", None, None, "Acme"), "needs 'amount'"),
        (("login", "25", "GBP", "Acme"), "'transaction' only"),
        ((None, None, None, "Acme"), "'transaction' only"),
        (("signup", "25", "GBP"), "'transaction' only"),
    ],
)
def test_purpose_rules(args: tuple[Any, ...], why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        bind(*args)


def test_purposes_default_to_login_and_operators_may_name_their_own() -> None:
    assert bind() == bind("login") == DEFAULT
    assert bind("change_email").purpose == "change_email"
    assert MINOR_UNITS["JPY"] == 0 and MINOR_UNITS["GBP"] == 2 and MINOR_UNITS["BHD"] == 3


# -- the tag ---------------------------------------------------------------------------

RING = Keyring.from_hex([new_secret_hex()])
PARTS = ("VE" + "0" * 32, UK_MOBILE, "sms", "123456")


def test_a_login_tag_is_the_tag_from_before_purposes() -> None:
    """Tags stored before purposes existed verify as login codes, and only as those."""
    key_id, legacy = RING.sign(*PARTS)
    assert RING.sign(*PARTS, DEFAULT.tag_parts()) == (key_id, legacy)
    assert RING.verify(key_id, legacy, *PARTS, bind("login").tag_parts())
    assert not RING.verify(key_id, legacy, *PARTS, bind("signup").tag_parts())
    assert not RING.verify(key_id, legacy, *PARTS, bind(**PAY).tag_parts())


def _not_transaction(purpose: str) -> bool:
    return purpose != "transaction"


bindings = st.one_of(
    st.builds(bind, st.from_regex(r"[a-z0-9_]{1,32}", fullmatch=True).filter(_not_transaction)),
    st.builds(
        Binding,
        st.just("transaction"),
        st.from_regex(r"[1-9][0-9]{0,5}\.[0-9]{2}", fullmatch=True),
        st.sampled_from(["EUR", "GBP", "USD"]),
        st.from_regex(r"[A-Za-z][A-Za-z &'-]{0,20}[A-Za-z]", fullmatch=True),
    ),
)


@settings(max_examples=80, derandomize=True, database=None, deadline=None)
@given(original=bindings, other=bindings)
def test_any_changed_field_fails(original: Binding, other: Binding) -> None:
    key_id, tag = RING.sign(*PARTS, original.tag_parts())
    assert RING.verify(key_id, tag, *PARTS, original.tag_parts())
    for field in ("purpose", "amount", "currency", "payee"):
        changed = Binding(**{**vars(original), field: getattr(other, field)})
        if changed != original:
            assert not RING.verify(key_id, tag, *PARTS, changed.tag_parts()), field
    if other != original:
        assert not RING.verify(key_id, tag, *PARTS, other.tag_parts())


# -- the Verifier ------------------------------------------------------------------------


async def failed_checks(otp: Verifier, vid: str) -> int:
    events = await otp.store.list_events(EventQuery(types=(EventType.CHECK_FAILED.value,)))
    return sum(e.verification_id == vid for e in events)


@pytest.mark.parametrize(
    ("started", "checked"),
    [
        ({}, {"purpose": "password_reset"}),
        ({"purpose": "password_reset"}, {}),
        ({"purpose": "password_reset"}, {"purpose": "login"}),
        ({"purpose": "signup"}, {"purpose": "password_reset"}),
        (PAY, {}),
        (PAY, {**PAY, "amount": "25.01"}),
        (PAY, {**PAY, "currency": "EUR"}),
        (PAY, {**PAY, "payee": "Acme Ltd."}),
        (PAY, {**PAY, "payee": "acme ltd"}),
        ({}, PAY),
    ],
)
async def test_a_code_for_one_purpose_is_a_wrong_code_for_another(
    verifier: Verifier, outbox: MemoryTransport, started: dict[str, str], checked: dict[str, str]
) -> None:
    v = await verifier.start(UK_MOBILE, **started)
    code = outbox.last_code()
    result = await verifier.check(code, verification_id=v.id, **checked)
    assert (result.valid, result.status) == (False, Status.PENDING)
    assert result.attempts_remaining == verifier.settings.max_attempts - 1  # counted
    assert await failed_checks(verifier, v.id) == 1
    right = await verifier.check(code, verification_id=v.id, **started)
    assert right.valid and right.status is Status.APPROVED


async def test_mismatches_lock_like_wrong_codes(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE, **PAY)
    code = outbox.last_code()
    for n in range(verifier.settings.max_attempts):
        r = await verifier.check(code, verification_id=v.id, **{**PAY, "amount": f"{26 + n}"})
        assert not r.valid
    assert r.status is Status.MAX_ATTEMPTS_REACHED
    assert not (await verifier.check(code, verification_id=v.id, **PAY)).valid


async def test_the_same_amount_written_another_way_is_the_same_amount(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE, **{**PAY, "amount": "25"})
    assert (v.amount, v.currency, v.purpose) == ("25.00", "GBP", "transaction")
    r = await verifier.check(outbox.last_code(), verification_id=v.id, **{**PAY, "amount": "25.0"})
    assert r.valid


async def test_a_login_code_checks_with_or_without_naming_login(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    a = await verifier.start(UK_MOBILE)
    assert a.purpose == "login" and a.amount is a.payee is None
    assert (await verifier.check(outbox.last_code(), verification_id=a.id)).valid
    b = await verifier.start("+447400123457", purpose="login")
    assert (await verifier.check(outbox.last_code(), verification_id=b.id, purpose="login")).valid


async def test_a_verification_stored_before_purposes_still_verifies(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    """A row written by the previous release: tag without binding, no purpose."""
    vid, now = new_verification_id(), clock()
    key_id, tag = verifier.keyring.sign(vid, UK_MOBILE, "sms", "480213")
    old = Verification(
        id=vid, to=UK_MOBILE, channel=Channel.SMS, status=Status.PENDING, key_id=key_id,
        code_hash=tag, created_at=now, updated_at=now, expires_at=now + 300,
        resend_available_at=now + 30, country="GB",
    )  # fmt: skip
    await verifier.store.create_verification(old)
    assert not (await verifier.check("480213", verification_id=vid, purpose="signup")).valid
    assert (await verifier.check("480213", verification_id=vid)).valid


async def test_the_message_names_the_amount_and_the_payee(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    await verifier.start(UK_MOBILE, **{**PAY, "payee": "Müller & Söhne"})
    text = outbox.outbox[-1].render_text()
    assert "to pay GBP 25.00 to Müller & Söhne." in text
    assert outbox.last_code() in text
    await verifier.start("+447400123457")
    assert "to pay" not in outbox.outbox[-1].render_text()


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        ("en", "to pay GBP 25.00 to Acme Ltd"),
        ("es", "para pagar GBP 25.00 a Acme Ltd"),
        ("fr", "pour payer GBP 25.00 à Acme Ltd"),
        ("de", "für die Zahlung von GBP 25.00 an Acme Ltd"),
    ],
)
def test_every_language_names_the_amount_and_the_payee(locale: str, words: str) -> None:
    msg = Message(
        verification_id="VE1", to=UK_MOBILE, channel=Channel.SMS, code="480213",
        service_name="Shop", ttl_seconds=300, locale=locale, amount="GBP 25.00",
        payee="Acme Ltd",
    )  # fmt: skip
    assert words in msg.render_text() and "480213" in msg.render_text()
    call = voice_twiml(Message(**{**vars(msg), "channel": Channel.VOICE}))
    assert words in call and "4, 8, 0, 2, 1, 3" in call


async def test_a_resend_keeps_the_binding(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE, **PAY)
    first = outbox.last_code()
    clock.advance(31)
    resent = await verifier.resend(v.id)
    assert (resent.purpose, resent.amount, resent.currency, resent.payee) == (
        "transaction", "25.00", "GBP", "Acme Ltd",
    )  # fmt: skip
    code = outbox.last_code()
    assert code != first and "to pay GBP 25.00 to Acme Ltd" in outbox.outbox[-1].render_text()
    assert not (await verifier.check(code, verification_id=v.id)).valid
    assert (await verifier.check(code, verification_id=v.id, **PAY)).valid


async def test_a_check_by_number_compares_the_purpose(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    await verifier.start(UK_MOBILE, **PAY)
    code = outbox.last_code()
    with pytest.raises(NotFound):
        await verifier.check(code, to=UK_MOBILE)
    with pytest.raises(NotFound):
        await verifier.check(code, to=UK_MOBILE, **{**PAY, "payee": "Other Ltd"})
    result = await verifier.check(code, to=UK_MOBILE, **PAY)
    assert result.valid and result.verification.payee == "Acme Ltd"


async def test_bad_bindings_are_refused_before_anything_is_sent_or_counted(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    with pytest.raises(InvalidRequest, match="'payee'"):
        await verifier.start(UK_MOBILE, **{**PAY, "payee": "acme.com"})
    with pytest.raises(InvalidRequest, match="WhatsApp"):
        await verifier.start(UK_MOBILE, "whatsapp", **PAY)
    assert outbox.outbox == []
    v = await verifier.start(UK_MOBILE, **PAY)
    with pytest.raises(InvalidRequest, match="ISO 4217"):
        await verifier.check(outbox.last_code(), verification_id=v.id, **{**PAY, "currency": "XX"})
    assert (await verifier.get(v.id)).attempts == 0
    assert await failed_checks(verifier, v.id) == 0


async def test_events_name_the_purpose_never_the_payment(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    login = await verifier.start(UK_MOBILE)
    pay = await verifier.start("+447400123457", **{**PAY, "amount": "987.65"})
    await verifier.check(outbox.last_code(), verification_id=pay.id)
    events = await verifier.store.list_events(EventQuery(limit=100))
    started = {e.verification_id: e for e in events if e.type == EventType.STARTED.value}
    assert started[login.id].details == {}
    assert started[pay.id].details == {"purpose": "transaction"}
    assert len(events) > 4
    for e in events:
        assert "987.65" not in e.to_json() and "Acme" not in e.to_json()


async def test_a_mismatch_fails_like_a_wrong_code(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    """The same answer and the same bookkeeping as a wrong code (the route pads both)."""
    a = await verifier.start(UK_MOBILE, **PAY)
    mismatch = await verifier.check(outbox.last_code(), verification_id=a.id)
    b = await verifier.start("+447400123457", **PAY)
    wrong_code = await verifier.check(wrong(outbox.last_code()), verification_id=b.id, **PAY)
    assert (mismatch.valid, mismatch.status, mismatch.attempts_remaining) == (
        wrong_code.valid, wrong_code.status, wrong_code.attempts_remaining,
    )  # fmt: skip


# -- /v1 ---------------------------------------------------------------------------------

PAY_JSON = {
    "purpose": "transaction",
    "amount": {"value": "25", "currency": "GBP"},
    "payee": "Acme Ltd",
}


async def test_api_start_and_check_a_transaction(api: ApiClient, outbox: MemoryTransport) -> None:
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE, **PAY_JSON})
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["purpose"] == "transaction" and v["payee"] == "Acme Ltd"
    assert v["amount"] == {"value": "25.00", "currency": "GBP"}
    code = outbox.last_code()
    assert "to pay GBP 25.00 to Acme Ltd" in outbox.outbox[-1].render_text()

    other = {**PAY_JSON, "amount": {"value": "250", "currency": "GBP"}}
    r = await api.post("/v1/verifications/check", json={"id": v["id"], "code": code, **other})
    assert r.status_code == 200 and r.json()["valid"] is False
    assert r.json()["attempts_remaining"] == 4
    r = await api.post("/v1/verifications/check", json={"id": v["id"], "code": code})
    assert r.status_code == 200 and r.json()["valid"] is False
    r = await api.post("/v1/verifications/check", json={"to": UK_MOBILE, "code": code, **PAY_JSON})
    assert r.status_code == 200 and r.json()["valid"] is True
    got = (await api.get(f"/v1/verifications/{v['id']}")).json()
    assert got["status"] == "approved" and got["purpose"] == "transaction"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"purpose": "transaction"}, 400),
        ({**PAY_JSON, "payee": "see acme.com"}, 400),
        ({**PAY_JSON, "amount": {"value": "25.001", "currency": "GBP"}}, 400),
        ({**PAY_JSON, "amount": {"value": "25"}}, 422),
        ({**PAY_JSON, "amount": "25.00"}, 422),
        ({**PAY_JSON, "amount": {"value": 25, "currency": "GBP"}}, 422),
        ({"purpose": "Login"}, 400),
        ({"payee": "Acme Ltd"}, 400),
    ],
)
async def test_api_refuses_bad_bindings(
    api: ApiClient, outbox: MemoryTransport, body: dict[str, Any], status: int
) -> None:
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE, **body})
    assert r.status_code == status, r.text
    assert outbox.outbox == []


async def test_api_a_mismatch_takes_the_failed_check_floor(
    api_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    outbox: MemoryTransport,
) -> None:
    """A lower bound only (a slow machine is never faster than the floor)."""
    floor = 0.25
    async with api_factory(settings_factory(failed_check_floor=floor)) as api:
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE, **PAY_JSON})
        body = {"id": r.json()["id"], "code": outbox.last_code(), **PAY_JSON, "payee": "Acme"}
        started = time.monotonic()
        r = await api.post("/v1/verifications/check", json=body)
        elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.json()["valid"] is False
    assert elapsed >= floor - 0.005
