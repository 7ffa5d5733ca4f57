"""The admission part of the storage contract (``Store.admit``, ``Store.credit``, and
the ``record_only`` / ``skip_if_seen`` rule flags), run against every backend.

The arithmetic is ``otpguard.admission``'s; every backend must agree with it exactly,
including under concurrency (one process's coroutines and several processes)."""

from __future__ import annotations

import asyncio
import math

import pytest

from otpguard import admission
from otpguard.models import Bucket, RateRule
from otpguard.stores import Store

from .conftest import SHARED_STORE_URLS
from .test_store_contract import T0, race_in_processes

HOUR = 3600.0


def bucket(key: str = "adm:country:GB", base: float = 5, tau: float = HOUR, share: float = 0.5):
    return Bucket(name="country", key=key, base=base, tau=tau, share=share)


async def test_admit_until_base_then_refuses_naming_the_bucket(store: Store) -> None:
    b = bucket()
    allowed = [(await store.admit([], [b], T0)).allowed for _ in range(7)]
    assert allowed == [True] * 5 + [False] * 2
    refused = await store.admit([], [b], T0)
    assert (refused.allowed, refused.rule, refused.key, refused.challenge) == (
        False,
        "country",
        b.key,
        False,
    )
    assert refused.retry_after >= 1.0


async def test_level_decays_with_tau(store: Store) -> None:
    b = bucket(base=5)
    for _ in range(5):
        assert (await store.admit([], [b], T0)).allowed
    assert not (await store.admit([], [b], T0 + 60)).allowed
    # level 5 * e^(-t/tau) + 1 <= 5  <=>  t >= tau * ln(5/4)
    wait = HOUR * math.log(5 / 4)
    assert not (await store.admit([], [b], T0 + wait - 5)).allowed
    assert (await store.admit([], [b], T0 + wait + 5)).allowed


async def test_retry_after_is_when_the_level_has_decayed(store: Store) -> None:
    b = bucket(base=5)
    for _ in range(5):
        await store.admit([], [b], T0)
    refused = await store.admit([], [b], T0)
    assert refused.retry_after == pytest.approx(HOUR * math.log(5 / 4), rel=1e-6)


async def test_credit_refunds_and_earns(store: Store) -> None:
    b = bucket(base=4, share=0.5)
    for _ in range(4):
        assert (await store.admit([], [b], T0)).allowed
    assert not (await store.admit([], [b], T0)).allowed
    # Two approvals: level 4 -> 2, earned 2 -> allowance 4 + 1 = 5: three more fit.
    await store.credit([b], 1, T0)
    await store.credit([b], 1, T0)
    results = [(await store.admit([], [b], T0)).allowed for _ in range(4)]
    assert results == [True, True, True, False]


async def test_credit_never_below_zero(store: Store) -> None:
    b = bucket(base=2, share=0.0)
    await store.credit([b], 5, T0)  # an approval on an empty bucket
    allowed = [(await store.admit([], [b], T0)).allowed for _ in range(3)]
    assert allowed == [True, True, False]


async def test_pressure_asks_for_a_challenge_before_the_hard_line(store: Store) -> None:
    b = bucket(base=10, share=0.0)
    decisions = [await store.admit([], [b], T0, pressure=0.2) for _ in range(10)]
    # soft line: level + 1 <= 0.8 * 10 -> 8 admitted, then challenges
    assert [d.allowed for d in decisions] == [True] * 8 + [False] * 2
    assert all(d.challenge and d.rule == "country" for d in decisions[8:])
    # a challenge recorded nothing; a forced (challenge passed) send is recorded
    assert (await store.admit([], [b], T0, force=True)).allowed
    assert (await store.admit([], [b], T0, force=True)).allowed
    assert (await store.admit([], [b], T0, force=True)).allowed  # force ignores the line
    hard = await store.admit([], [b], T0)
    assert not hard.allowed and not hard.challenge


async def test_admit_all_or_nothing_across_rules_and_buckets(store: Store) -> None:
    roomy, full = bucket("adm:a", base=10), bucket("adm:b", base=1)
    r = RateRule("phone", "phone:x", 10, 600)
    assert (await store.admit([r], [roomy, full], T0)).allowed
    refused = await store.admit([r], [roomy, full], T0)
    assert refused.key == "adm:b"
    # nothing recorded by the refusal: the rule still has 9, roomy still 9
    assert await store.count("phone:x", 600, T0) == 1
    for _ in range(9):
        assert (await store.admit([r], [roomy], T0)).allowed
    assert not (await store.admit([], [roomy], T0)).allowed


async def test_admit_refused_by_a_rule_touches_no_bucket(store: Store) -> None:
    b = bucket(base=1)
    r = RateRule("phone", "phone:y", 0, 600)
    refused = await store.admit([r], [b], T0)
    assert (refused.allowed, refused.rule, refused.key) == (False, "phone", "phone:y")
    assert (await store.admit([], [b], T0)).allowed


async def test_record_only_rule_never_refuses(store: Store) -> None:
    r = RateRule("seq", "counter:z", 0, 600, record_only=True)
    for _ in range(3):
        assert (await store.hit([r], T0)).allowed
    assert await store.count("counter:z", 600, T0) == 3


async def test_only_the_flag_makes_a_rule_record_only(store: Store) -> None:
    """A huge limit is a limit like any other: the rule is counted and reports its
    count (a store once took limits of 2**40 and more to mean "record only")."""
    r = RateRule("big", "big:k", 2**41, 600)
    assert (await store.hit([r], T0, cost=2)).count == 2
    assert (await store.hit([r], T0 + 1)).count == 3
    counter = RateRule("seq", "big:c", 2**41, 600, record_only=True)
    assert (await store.hit([r, counter], T0 + 2)).count == 4  # the enforced rule's


async def test_skip_if_seen_counts_distinct(store: Store) -> None:
    """A range walk: the rule counts distinct numbers, the same number again passes."""

    def walk(n: int) -> list[RateRule]:
        seen = f"seen:ip:{n}"
        return [
            RateRule("seq", seen, 1, 600, record_only=True),
            RateRule("sequential_numbers", "walk:ip", 2, 600, skip_if_seen=seen),
        ]

    assert (await store.hit(walk(1), T0)).allowed
    assert (await store.hit(walk(1), T0)).allowed  # again: not a new number
    assert (await store.hit(walk(2), T0)).allowed
    refused = await store.hit(walk(3), T0)
    assert (refused.allowed, refused.rule) == (False, "sequential_numbers")
    assert (await store.hit(walk(2), T0)).allowed  # seen numbers still pass
    assert await store.count("walk:ip", 600, T0) == 2


async def test_admit_concurrent_is_exact(store: Store) -> None:
    b = bucket(base=7, share=0.0)
    r = RateRule("phone", "phone:c", 100, 600)
    decisions = await asyncio.gather(*(store.admit([r], [b], T0) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 7
    assert await store.count("phone:c", 600, T0) == 7


async def _walk_hits(store: Store, n: int) -> list[bool]:
    rules = [
        RateRule("seq", f"seen:race:{n}", 1, 600, record_only=True),
        RateRule("sequential_numbers", "walk:race", 4, 600, skip_if_seen=f"seen:race:{n}"),
    ]
    return [(await store.hit(rules, T0)).allowed]


async def test_skip_if_seen_concurrent_is_exact(store: Store) -> None:
    """Ten concurrent starts from one IP to ten numbers of one block: exactly the
    threshold are sent (the range-walk race of issue 12)."""
    results = await asyncio.gather(*(_walk_hits(store, n) for n in range(10)))
    assert sum(r[0] for r in results) == 4


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_admit_cross_process_is_exact(store: Store, store_url: str) -> None:
    b = bucket("adm:race", base=9, share=0.0)
    outcomes = race_in_processes(store_url, "admit", b, processes=4, calls=8)
    assert sum(outcomes) == 9
    assert not (await store.admit([], [b], T0)).allowed


def test_fits_matches_the_documented_formula() -> None:
    b = bucket(base=3, share=0.5)
    state = admission.Level(level=3.5, earned=2.0)  # allowance 4
    assert not admission.fits(b, state)
    assert admission.fits(b, admission.Level(3.0, 2.0))
    assert not admission.fits(b, admission.Level(3.0, 2.0), pressure=0.2)  # 4 > 3.2
