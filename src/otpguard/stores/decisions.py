"""The rate-window decisions every backend shares, written once above them: which
rule an admitted ``hit`` or ``admit`` reports, what a refusal's ``retry_after`` is.
The backends count atomically; these turn the counts into the answer."""

from __future__ import annotations

from collections.abc import Sequence

from ..models import RateDecision, RateRule

#: The rule of an admission that found one of its start's ``unless_flags`` set.
FLAGS_SET = "flags_set"
FLAGS_FOUND = RateDecision(False, FLAGS_SET)


def allowed_decision(rules: Sequence[RateRule], counts: Sequence[int], added: int) -> RateDecision:
    """An admitted ``hit`` or ``admit``, reporting the fullest enforced rule's count
    (``counts`` before the ``added`` events): decided here once for every backend."""
    if not rules:
        return RateDecision(True)
    after = [n + added for n in counts]
    enforced = [i for i, r in enumerate(rules) if not r.record_only] or list(range(len(rules)))
    fullest = max(
        enforced,
        key=lambda i: (after[i] / rules[i].limit if rules[i].limit else float("inf"), -i),
    )
    return RateDecision(True, None, 0.0, after[fullest])


def hit_rules(rules: Sequence[RateRule], cost: int) -> tuple[RateRule, ...]:
    """The rules of a ``hit`` of ``cost``, checked once for every backend (ValueError
    for a negative cost); an empty result is allowed without asking the backend."""
    if cost < 0:
        raise ValueError("cost must be >= 0")
    return tuple(rules)


def must_leave(rule: RateRule, count: int, cost: int) -> int:
    """How many of the ``count`` entries in ``rule``'s window must leave before ``cost``
    more fit; 0 when they fit now (record-only rules always fit)."""
    return 0 if rule.record_only else max(0, count + cost - rule.limit)


def refusal(rule: RateRule, count: int, oldest: float | None, now: float) -> RateDecision:
    """A ``hit`` or ``admit`` refused by ``rule`` at ``count``: room appears once the
    :func:`must_leave`-th oldest entry (recorded at ``oldest``) leaves the window; None
    when it never fits (cost > limit), and a full window is the bound. Decided here
    once for every backend."""
    wait = float(rule.window) if oldest is None else oldest + rule.window - now
    return RateDecision(False, rule.name, wait, count, key=rule.key)
