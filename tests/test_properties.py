"""Hypothesis properties: codes, HMAC binding, number normalisation, rate limits.

Limits are exercised on the SQLite store with a ManualClock: hypothesis draws
batches of concurrent sends (gathered, so the store serialises them in some
order) separated by clock moves, and the test recounts every sliding window
from what was actually allowed.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import Counter
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from otpguard.clock import ManualClock
from otpguard.codes import Keyring, generate_code, is_trivial, is_well_formed, new_secret_hex
from otpguard.errors import InvalidPhoneNumber, RateLimited
from otpguard.models import RateRule
from otpguard.phone import normalize, parse
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport

from .conftest import make_settings

FAST = settings(max_examples=60, derandomize=True, database=None, deadline=None)
SLOW = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- codes ---------------------------------------------------------------------------------


@FAST
@given(length=st.integers(6, 10))
def test_codes_are_well_formed_and_never_trivial(length: int) -> None:
    for _ in range(50):
        code = generate_code(length)
        assert is_well_formed(code, length)
        assert not is_trivial(code)


@pytest.mark.parametrize("length", [6, 8])
def test_code_digits_are_uniform_in_every_position(length: int) -> None:
    """Chi-square per position over 20,000 codes; the bound is p < 1e-9 for 9 d.o.f.

    (Redrawing the 30 trivial codes per million shifts the expected counts by far
    less than the bound allows.)
    """
    n = 20_000
    codes = [generate_code(length) for _ in range(n)]
    expected = n / 10
    for pos in range(length):
        counts = Counter(c[pos] for c in codes)
        chi2 = sum((counts.get(str(d), 0) - expected) ** 2 / expected for d in range(10))
        assert chi2 < 60.0, (pos, dict(counts))
    assert len(set(codes)) > 0.97 * n  # no repeated patterns beyond chance


@pytest.mark.parametrize("length", [6, 7])
def test_leading_zeros_occur(length: int) -> None:
    firsts = Counter(generate_code(length)[0] for _ in range(5_000))
    assert firsts["0"] > 300  # ~500 expected; a generator dropping zeros gives 0


# -- HMAC binding --------------------------------------------------------------------------

ids = st.from_regex(r"VE[0-9a-f]{32}", fullmatch=True)
numbers = st.from_regex(r"\+[1-9][0-9]{7,13}", fullmatch=True)
channels = st.sampled_from(["sms", "whatsapp", "voice"])
codes = st.from_regex(r"[0-9]{6,10}", fullmatch=True)
RING = Keyring.from_hex([new_secret_hex(), new_secret_hex()])


@FAST
@given(
    original=st.tuples(ids, numbers, channels, codes),
    other=st.tuples(ids, numbers, channels, codes),
)
def test_a_tag_verifies_only_its_own_id_number_channel_and_code(
    original: tuple[str, str, str, str], other: tuple[str, str, str, str]
) -> None:
    key_id, tag = RING.sign(*original)
    assert RING.verify(key_id, tag, *original)
    for i in range(4):  # change one part at a time, then all of them
        changed = list(original)
        changed[i] = other[i]
        if changed != list(original):
            assert not RING.verify(key_id, tag, *changed)
    if other != original:
        assert not RING.verify(key_id, tag, *other)


@FAST
@given(parts=st.tuples(ids, numbers, channels, codes))
def test_a_tag_does_not_verify_under_another_key(parts: tuple[str, str, str, str]) -> None:
    _, tag = RING.sign(*parts)
    other = Keyring.from_hex([new_secret_hex()])
    assert not other.verify(other.signing_key_id, tag, *parts)
    assert not RING.verify(RING.key_ids[1], tag, *parts)  # the right tag filed under another key


# -- number normalisation ------------------------------------------------------------------

REGIONS = ["GB", "US", "FR", "DE", "IE", "IN", "AU"]


@st.composite
def written_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A valid number of some region, written the way a person might type it."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    national = str(example.national_number)
    tail = draw(st.text("0123456789", min_size=2, max_size=2))
    example.national_number = int(national[:-2] + tail)
    fmt = draw(
        st.sampled_from(
            [
                phonenumbers.PhoneNumberFormat.E164,
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.NATIONAL,
                phonenumbers.PhoneNumberFormat.RFC3966,
            ]
        )
    )
    text = phonenumbers.format_number(example, fmt)
    if fmt == phonenumbers.PhoneNumberFormat.RFC3966:
        text = text.removeprefix("tel:")
    return text, region


@FAST
@given(written=written_numbers())
@example(written=("07400 123456", "GB"))  # valid: the normalisation branch always runs
@example(written=("+44 7400 1234", "GB"))  # too short: the refusal branch always runs
def test_normalisation_is_idempotent_and_format_blind(written: tuple[str, str]) -> None:
    text, region = written
    if not phonenumbers.is_valid_number(phonenumbers.parse(text, region)):
        # the changed digits made an invalid number: refused, by its own error
        with pytest.raises(InvalidPhoneNumber):
            normalize(text, region)
        return
    e164 = normalize(text, region)
    assert normalize(e164, region) == e164
    assert normalize(e164, "GB") == e164  # E.164 does not depend on the default region
    parsed = phonenumbers.parse(e164)
    for fmt in (phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164):
        assert normalize(phonenumbers.format_number(parsed, fmt), region) == e164
    assert parse(e164, region).e164 == e164


# -- rate limits never let more than their maximum through ---------------------------------


def _max_in_any_window(times: list[float], window: float) -> int:
    """The most events inside any half-open window (t - window, t]."""
    times = sorted(times)
    best = 0
    for t in times:
        best = max(best, bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window))
    return best


batch = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=6)
steps = st.lists(st.tuples(st.floats(0, 400, allow_nan=False), batch), min_size=1, max_size=12)


@SLOW
@given(plan=steps)
@example(plan=[(0.0, [(0, 3), (0, 1), (2, 1)])])
def test_store_hit_never_lets_more_than_the_limit_through(
    plan: list[tuple[float, list[tuple[int, int]]]],
) -> None:
    """Concurrent hits over two overlapping rule sets, costs 1-3, clock moving forward."""
    rules_for = [
        [RateRule("a", "a", 3, 600), RateRule("g", "g", 7, 300)],
        [RateRule("b", "b", 4, 120), RateRule("g", "g", 7, 300)],
        [RateRule("a", "a", 3, 600), RateRule("b", "b", 4, 120)],
    ]

    async def run() -> dict[str, list[float]]:
        store = store_from_url("sqlite://:memory:")
        await store.open()
        clock = ManualClock()
        allowed: dict[str, list[float]] = {"a": [], "b": [], "g": []}
        try:
            for dt, hits in plan:
                clock.advance(dt)
                now = clock()
                decisions = await asyncio.gather(
                    *(store.hit(rules_for[which], now, cost=cost) for which, cost in hits)
                )
                for (which, cost), d in zip(hits, decisions, strict=True):
                    if d.allowed:
                        for key in dict.fromkeys(r.key for r in rules_for[which]):
                            allowed[key] += [now] * cost
        finally:
            await store.aclose()
        return allowed

    allowed = asyncio.run(run())
    if plan == [(0.0, [(0, 3), (0, 1), (2, 1)])]:
        assert len(allowed["a"]) in (2, 3)  # the explicit example: some pass, never over 3
    assert _max_in_any_window(allowed["a"], 600) <= 3
    assert _max_in_any_window(allowed["b"], 120) <= 4
    assert _max_in_any_window(allowed["g"], 300) <= 7


PHONES = ["+447400123456", "+447400654321", "+447412345678"]
IPS = ["198.51.100.1", "198.51.100.2", "203.0.113.5"]
sends = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=8)
send_plan = st.lists(
    st.tuples(st.sampled_from([0.0, 30.0, 200.0, 599.0, 601.0, 3600.0]), sends),
    min_size=1,
    max_size=10,
)


@SLOW
@given(plan=send_plan)
@example(plan=[(0.0, [(0, 0), (0, 1), (0, 2), (0, 0), (0, 1)])])
def test_the_engine_never_sends_more_than_the_limits_allow(
    tmp_path: Path, plan: list[tuple[float, list[tuple[int, int]]]]
) -> None:
    """Concurrent starts through the Verifier; the outbox is the ground truth."""
    config = make_settings(
        tmp_path,
        limit_phone="3/10m;10/24h",
        limit_ip="4/10m",
        limit_network="6/10m",
        limit_global="8/1m",
        allowlist=["+447"],  # fraud rules off: only the rate limits are under test
    )

    async def run() -> tuple[list[tuple[float, str, str]], int]:
        clock = ManualClock()
        outbox = MemoryTransport()
        sent: list[tuple[float, str, str]] = []
        refused = 0
        async with Verifier(config, store_from_url("sqlite://:memory:"), outbox, clock=clock) as v:
            for dt, batch_ in plan:
                clock.advance(dt)
                results = await asyncio.gather(
                    *(v.start(PHONES[p], client_ip=IPS[i]) for p, i in batch_),
                    return_exceptions=True,
                )
                for (p, i), r in zip(batch_, results, strict=True):
                    if isinstance(r, RateLimited):
                        refused += 1
                    elif isinstance(r, BaseException):
                        raise r
                    else:
                        sent.append((clock(), PHONES[p], IPS[i]))
            assert len(outbox.outbox) == len(sent)
        return sent, refused

    sent, refused = asyncio.run(run())
    if plan == [(0.0, [(0, 0), (0, 1), (0, 2), (0, 0), (0, 1)])]:
        assert (len(sent), refused) == (3, 2)  # the explicit example: five at once, three pass
    for phone in PHONES:
        times = [t for t, p, _ in sent if p == phone]
        assert _max_in_any_window(times, 600) <= 3
        assert _max_in_any_window(times, 86400) <= 10
    for ip in IPS:
        assert _max_in_any_window([t for t, _, i in sent if i == ip], 600) <= 4
    assert _max_in_any_window([t for t, _, i in sent if i.startswith("198.51.100.")], 600) <= 6
    assert _max_in_any_window([t for t, _, _ in sent], 60) <= 8


def test_window_counter_helper() -> None:
    assert _max_in_any_window([0, 1, 2, 600, 601], 600) == 3
    assert _max_in_any_window([0, 600], 600) == 1  # (t - window, t] is half-open
    assert _max_in_any_window([], 10) == 0
    assert math.isfinite(_max_in_any_window([1.5] * 4, 1))
