"""Destination policy: parsing, normalising, the UK table number by number, lists.

Every number below was checked against the pinned ``phonenumbers`` metadata:
it is valid and classifies as the type in its row.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import ConfigError, DestinationRefused, InvalidPhoneNumber
from otpguard.events import EventType
from otpguard.models import Channel
from otpguard.phone import DestinationPolicy, PhoneNumber, normalize_pattern, parse
from otpguard.service import Verifier
from otpguard.stores import EventQuery, store_from_url
from otpguard.transports.memory import MemoryTransport

OK = None
FIXED = "number_type:fixed_line"

# (range, E.164 number, region, phonenumbers type, sms, whatsapp, voice); None = allowed.
UK_TABLE: list[tuple[str, str, str, str, str | None, str | None, str | None]] = [
    ("07 mobile", "+447400123456", "GB", "mobile", OK, OK, OK),
    ("07 mobile", "+447912345678", "GB", "mobile", OK, OK, OK),
    ("07 mobile", "+447557123456", "GB", "mobile", OK, OK, OK),
    ("01 landline", "+441212345678", "GB", "fixed_line", FIXED, FIXED, OK),
    ("02 landline", "+442071234567", "GB", "fixed_line", FIXED, FIXED, OK),
    ("030 UAN", "+443001234567", "GB", "uan", *["number_type:uan"] * 3),
    ("034 UAN", "+443451234567", "GB", "uan", *["number_type:uan"] * 3),
    ("037 UAN", "+443700100222", "GB", "uan", *["number_type:uan"] * 3),
    ("055 UAN", "+445512345678", "GB", "uan", *["number_type:uan"] * 3),
    ("056 VoIP", "+445612345678", "GB", "voip", *["number_type:voip"] * 3),
    ("070 personal", "+447012345678", "GB", "personal_number",
     *["number_type:personal_number"] * 3),
    ("076 pager", "+447640123456", "GB", "pager", *["number_type:pager"] * 3),
    ("076 pager", "+447623456789", "GB", "pager", *["number_type:pager"] * 3),
    ("0800 freephone", "+448001234567", "GB", "toll_free", *["number_type:toll_free"] * 3),
    ("0808 freephone", "+448081570000", "GB", "toll_free", *["number_type:toll_free"] * 3),
    ("0843 revenue sharing", "+448431234567", "GB", "premium_rate", *["premium_rate"] * 3),
    ("0844 revenue sharing", "+448441234567", "GB", "premium_rate", *["premium_rate"] * 3),
    ("0845 revenue sharing", "+448451234567", "GB", "premium_rate", *["premium_rate"] * 3),
    ("0870 revenue sharing", "+448701234567", "GB", "premium_rate", *["premium_rate"] * 3),
    ("0871 revenue sharing", "+448712345678", "GB", "premium_rate", *["premium_rate"] * 3),
    ("0872 revenue sharing", "+448721234567", "GB", "premium_rate", *["premium_rate"] * 3),
    ("090 premium", "+449012345678", "GB", "premium_rate", *["premium_rate"] * 3),
    ("090 premium", "+449098765432", "GB", "premium_rate", *["premium_rate"] * 3),
    ("091 premium", "+449112345678", "GB", "premium_rate", *["premium_rate"] * 3),
]  # fmt: skip

CROWN_DEPENDENCIES = [
    ("Guernsey", "+447781123456", "GG"),
    ("Guernsey", "+447911123456", "GG"),
    ("Jersey", "+447797712345", "JE"),
    ("Isle of Man", "+447624123456", "IM"),
]


def gb_policy(**kw: object) -> DestinationPolicy:
    return DestinationPolicy(["GB"], **kw)  # type: ignore[arg-type]


def decisions(policy: DestinationPolicy, number: PhoneNumber) -> tuple[str | None, ...]:
    out = []
    for ch in (Channel.SMS, Channel.WHATSAPP, Channel.VOICE):
        d = policy.decide(number, ch)
        assert d.allowed is (d.reason is None)
        out.append(d.reason)
    return tuple(out)


# -- parsing and normalising --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "07400 123456",
        "07400123456",
        "07400-123-456",
        "(07400) 123456",
        "+44 7400 123456",
        "+447400123456",
        "+44 (0) 7400 123456",
        "0044 7400 123456",
        "  +447400123456  ",
    ],
)
def test_every_written_form_is_one_e164_number(raw: str) -> None:
    n = parse(raw, "GB")
    assert n.e164 == "+447400123456"
    assert (n.region, n.type, n.prefix) == ("GB", "mobile", "+44740012")


def test_the_default_region_reads_national_forms() -> None:
    assert parse("06 12 34 56 78", "FR").e164 == "+33612345678"
    assert parse("07400 123456", "GB").e164 == "+447400123456"
    assert parse("+447400123456", "FR").e164 == "+447400123456"  # international needs none


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "hello",
        "+44",
        "+44 7400",
        "07400 12345",  # a digit short
        "+447700900123",  # Ofcom's drama range: not a real number
        "+4474001234567890123456789012345678",  # longer than any input we read
        "07400 ABCDEF",  # phonenumbers would read a keypad: refused, not guessed
        "+447400123456 ext. 12",  # an extension would be silently dropped
        "+44 7400\x00123456",  # a control character inside
        "+44 7400 １２３４５６",  # non-ASCII digits
    ],
)
def test_invalid_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as err:
        parse(raw, "GB")
    assert err.value.code == "invalid_phone_number" and err.value.status == 400


async def test_invalid_number_is_400_before_any_send(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    with pytest.raises(InvalidPhoneNumber):
        await verifier.start("+44 7400", client_ip="203.0.113.7")
    assert outbox.outbox == []
    [event] = await verifier.store.list_events(EventQuery(types=(EventType.REFUSED.value,)))
    assert event.reason == "invalid_phone_number" and event.client_ip == "203.0.113.7"


# -- the UK table, number by number ----------------------------------------------------


@pytest.mark.parametrize(
    ("label", "e164", "region", "type_", "sms", "whatsapp", "voice"),
    UK_TABLE,
    ids=[f"{row[0]} {row[1]}" for row in UK_TABLE],
)
def test_uk_table(
    label: str,
    e164: str,
    region: str,
    type_: str,
    sms: str | None,
    whatsapp: str | None,
    voice: str | None,
) -> None:
    national = "0" + e164[3:]
    for raw in (e164, national):
        n = parse(raw, "GB")
        assert (n.e164, n.region, n.type) == (e164, region, type_), label
    assert decisions(gb_policy(), parse(e164)) == (sms, whatsapp, voice), label


@pytest.mark.parametrize(
    ("label", "e164", "sms", "voice"),
    [(row[0], row[1], row[4], row[6]) for row in UK_TABLE],
    ids=[f"{row[0]} {row[1]}" for row in UK_TABLE],
)
async def test_uk_table_through_the_engine(
    verifier: Verifier,
    outbox: MemoryTransport,
    label: str,
    e164: str,
    sms: str | None,
    voice: str | None,
) -> None:
    """Each refusal happens before anything is sent, and is recorded with its reason."""
    for channel, expected in (("sms", sms), ("voice", voice)):
        before = len(outbox.outbox)
        if expected is None:
            v = await verifier.start(e164, channel, client_ip="203.0.113.7")
            assert v.to == e164 and len(outbox.outbox) == before + 1
            continue
        with pytest.raises(DestinationRefused) as err:
            await verifier.start(e164, channel, client_ip="203.0.113.7")
        assert err.value.reason == expected and err.value.status == 403
        assert len(outbox.outbox) == before, label
    refused = await verifier.store.list_events(EventQuery(types=(EventType.REFUSED.value,)))
    assert sorted((e.channel, e.reason) for e in refused) == sorted(
        (ch, r) for ch, r in (("sms", sms), ("voice", voice)) if r is not None
    )


# -- countries, and the Crown Dependencies inside +44 ---------------------------------------


@pytest.mark.parametrize(("place", "e164", "region"), CROWN_DEPENDENCIES)
def test_crown_dependencies_need_their_own_codes(place: str, e164: str, region: str) -> None:
    n = parse(e164)
    assert (n.region, n.type) == (region, "mobile"), place
    refused = ("country_not_allowed",) * 3
    assert decisions(gb_policy(), n) == refused
    assert decisions(DestinationPolicy(["GB", region]), n) == (OK, OK, OK)
    # ... and allowing them does not allow Great Britain.
    assert decisions(DestinationPolicy([region]), parse("+447400123456")) == refused


async def test_country_not_allowed_through_the_engine(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    settings = settings_factory(allowed_countries=["GB", "JE"])
    async with Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock) as otp:
        with pytest.raises(DestinationRefused) as err:
            await otp.start("+33612345678")
        assert err.value.reason == "country_not_allowed"
        with pytest.raises(DestinationRefused) as err:
            await otp.start("+447781123456")  # Guernsey
        assert err.value.reason == "country_not_allowed"
        assert outbox.outbox == []
        await otp.start("+447797712345")  # Jersey, listed
        assert [m.to for m in outbox.outbox] == ["+447797712345"]


def test_other_types_are_refused_everywhere() -> None:
    au_shared_cost = parse("+611300123456")
    assert au_shared_cost.type == "shared_cost"
    assert decisions(DestinationPolicy(["AU"]), au_shared_cost) == ("shared_cost",) * 3
    de_voicemail = parse("+49177991234567")
    assert de_voicemail.type == "voicemail"
    assert decisions(DestinationPolicy(["DE"]), de_voicemail) == ("number_type:voicemail",) * 3
    unknown = PhoneNumber("+447400123456", "GB", "unknown")
    assert decisions(gb_policy(), unknown) == ("number_type:unknown",) * 3
    no_region = PhoneNumber("+80012345678", None, "toll_free")
    assert decisions(gb_policy(), no_region) == ("country_not_allowed",) * 3


def test_voip_only_when_allowed() -> None:
    voip = parse("+445612345678")
    assert decisions(gb_policy(), voip) == ("number_type:voip",) * 3
    assert decisions(gb_policy(allow_voip=True), voip) == (OK, OK, OK)
    # Allowing VoIP allows nothing else.
    assert decisions(gb_policy(allow_voip=True), parse("+449012345678")) == ("premium_rate",) * 3


def test_fixed_line_or_mobile_is_a_setting() -> None:
    us = parse("+12125550123")
    assert us.type == "fixed_line_or_mobile"
    assert decisions(DestinationPolicy(["US"]), us) == (OK, OK, OK)
    strict = DestinationPolicy(["US"], allow_fixed_line_or_mobile=False)
    refused = "number_type:fixed_line_or_mobile"
    assert decisions(strict, us) == (refused, refused, OK)  # voice reaches either kind


# -- operator lists ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+447400", "+447400"),
        ("+44 7400", "+447400"),
        ("0044 7400", "+447400"),
        ("07400", "+447400"),  # national form, default region GB
        ("07400 123456", "+447400123456"),
        ("+44 (0) 7400 123456", "+447400123456"),
        ("+1", "+1"),
    ],
)
def test_list_entries_are_normalised(raw: str, expected: str) -> None:
    assert normalize_pattern(raw, "GB") == expected


@pytest.mark.parametrize("raw", ["abc", "+", "0", "+44abc", "+1234567890123456"])
def test_unreadable_list_entries_are_a_configuration_error(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_pattern(raw, "GB")
    with pytest.raises(ConfigError, match="OTPGUARD_BLOCKLIST"):
        DestinationPolicy(["GB"], blocklist=[raw])
    with pytest.raises(ConfigError, match="OTPGUARD_ALLOWLIST"):
        DestinationPolicy(["GB"], allowlist=[raw])


def test_blocklist_numbers_and_prefixes() -> None:
    policy = gb_policy(blocklist=["07400 123456", "+44 7557"])
    assert decisions(policy, parse("+447400123456")) == ("blocklisted",) * 3
    assert decisions(policy, parse("+447557123456")) == ("blocklisted",) * 3
    assert decisions(policy, parse("+447400123457")) == (OK, OK, OK)  # a neighbour
    assert decisions(policy, parse("+447912345678")) == (OK, OK, OK)


def test_blocklist_wins_over_allowlist() -> None:
    policy = gb_policy(blocklist=["+447400123456"], allowlist=["+447400"])
    assert decisions(policy, parse("+447400123456")) == ("blocklisted",) * 3
    assert policy.is_allowlisted(parse("+447400123457"))


def test_allowlist_never_skips_the_type_or_country_policy() -> None:
    policy = gb_policy(allowlist=["+449012345678", "+441212345678", "+447781123456"])
    premium, landline, guernsey = (
        parse(n) for n in ("+449012345678", "+441212345678", "+447781123456")
    )
    assert all(policy.is_allowlisted(n) for n in (premium, landline, guernsey))
    assert decisions(policy, premium) == ("premium_rate",) * 3
    assert decisions(policy, landline) == (FIXED, FIXED, OK)
    assert decisions(policy, guernsey) == ("country_not_allowed",) * 3


async def test_blocklisted_through_the_engine_is_refused_and_recorded(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    settings = settings_factory(blocklist=["07400"])
    async with Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock) as otp:
        with pytest.raises(DestinationRefused) as err:
            await otp.start("+44 7400 123456", client_ip="203.0.113.7")
        assert err.value.reason == "blocklisted"
        assert outbox.outbox == []
        [event] = await otp.store.list_events(EventQuery(types=(EventType.REFUSED.value,)))
        assert (event.reason, event.country, event.number_masked) == (
            "blocklisted",
            "GB",
            "+44******3456",
        )


def test_twilio_magic_numbers_only_with_test_credentials() -> None:
    magic = parse("+15005550006")
    assert decisions(DestinationPolicy(["GB"], twilio_test_credentials=True), magic) == (OK,) * 3
    assert decisions(DestinationPolicy(["GB"]), magic) == ("country_not_allowed",) * 3


def test_explain() -> None:
    policy = gb_policy(allowlist=["+447400"])
    assert policy.explain(parse("07400 123456")) == {
        "number": "+447400123456",
        "country": "GB",
        "type": "mobile",
        "allowlisted": True,
        "channels": {
            "sms": {"allowed": True, "reason": None},
            "whatsapp": {"allowed": True, "reason": None},
            "voice": {"allowed": True, "reason": None},
        },
    }
    info = policy.explain(parse("+441212345678"))
    assert info["allowlisted"] is False
    assert info["channels"] == {
        "sms": {"allowed": False, "reason": FIXED},
        "whatsapp": {"allowed": False, "reason": FIXED},
        "voice": {"allowed": True, "reason": None},
    }
