"""Fraud rules: explainable, each refusal names the rule and the figures behind it.

``low_conversion``
    Over ``fraud_conversion_window`` seconds, a prefix (number minus its last
    four digits) or a country with at least ``fraud_conversion_min_sends`` sends
    and an approved/sent ratio below ``fraud_conversion_min_rate`` is suspended
    for ``fraud_conversion_suspend`` seconds. SMS pumping looks exactly like
    this: many sends to a range, nobody ever types a code. Sends younger than
    the code lifetime (``code_ttl``) are left out of the sent count, since
    their codes may still be typed: a burst of real users is not suspended
    before they had the chance to convert.
``sequential_numbers``
    From one client IP or network, sends to ``fraud_sequential_threshold`` or
    more distinct numbers of one prefix within ``fraud_sequential_window``
    seconds: someone walking a number range.
``budget_exhausted``
    A circuit breaker on sends per hour and per day, globally
    (``fraud_budget_global``) and per country (``fraud_budget_country``).

Rules named in ``fraud_shadow`` are evaluated and recorded as
``fraud.shadow`` events, but do not refuse. Allowlisted numbers skip these rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .config import Settings
from .limits import UNKNOWN_IP, ip_key, network_of
from .models import RateRule
from .phone import PhoneNumber
from .stores.base import Store

_HUGE = 10**12  # "record only" limit for counters that never refuse by themselves


@dataclass(frozen=True)
class FraudVerdict:
    rule: str  # low_conversion | sequential_numbers | budget_exhausted
    subject: str  # what the figures are about: "prefix +4474001", "country GB", ...
    figures: dict[str, float | int | str] = field(default_factory=dict)
    retry_after: float = 0.0

    @property
    def reason(self) -> str:
        return f"fraud:{self.rule}"


@dataclass
class Assessment:
    """What the fraud rules found before a send, and what to record with it.

    ``record`` holds counters for the engine to add to its atomic rate-limit hit,
    so that a send and its fraud bookkeeping are one store write; ``conversion``
    holds the conversion counts read before the send, for the watch after it."""

    verdicts: list[FraudVerdict] = field(default_factory=list)
    record: list[RateRule] = field(default_factory=list)
    conversion: dict[str, tuple[int, int, int]] = field(default_factory=dict)


class FraudRules:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def shadowed(self, rule: str) -> bool:
        return rule in self.settings.fraud_shadow

    # -- before a send ------------------------------------------------------------

    @staticmethod
    def flag_keys(number: PhoneNumber) -> list[str]:
        """The flags ``assess`` needs; the engine reads them with its own in one trip."""
        return [f"fraud:suspended:{subject}" for subject in _subjects(number)]

    def _walkers(self, client_ip: str) -> list[tuple[str, str]]:
        if client_ip == UNKNOWN_IP:
            return []  # the shared bucket is covered by the ip/network limits
        return [("ip", ip_key(client_ip)), ("network", network_of(client_ip))]

    async def assess(
        self, number: PhoneNumber, client_ip: str, now: float, flags: dict[str, str]
    ) -> Assessment:
        """Every rule that would refuse this send (shadowed ones included), from the
        flags already read and one batch of counts."""
        s = self.settings
        out = Assessment()
        for subject in _subjects(number):
            raw = flags.get(f"fraud:suspended:{subject}")
            if raw is not None:
                figures = _load_figures(raw)
                until = float(figures.get("until", now))
                out.verdicts.append(
                    FraudVerdict("low_conversion", subject, figures, retry_after=until - now)
                )
                break

        if self.shadowed("budget_exhausted"):  # enforced budgets live in the engine's hit
            verdict = await self._budget(number, now)
            if verdict is not None:
                out.verdicts.append(verdict)

        sw, threshold = s.fraud_sequential_window, s.fraud_sequential_threshold
        w, grace = s.fraud_conversion_window, min(s.code_ttl, s.fraud_conversion_window)
        walkers = self._walkers(client_ip)
        queries: list[tuple[str, int]] = []
        for scope, who in walkers:
            queries += [
                (f"fraud:seqseen:{scope}:{who}:{number.e164}", sw),
                (f"fraud:seq:{scope}:{who}:{number.prefix}", sw),
            ]
        kinds = list(zip(("prefix", "country"), _subjects_values(number), strict=True))
        for kind, value in kinds:
            queries += [
                (f"conv:sent:{kind}:{value}", w),
                (f"conv:sent:{kind}:{value}", grace),
                (f"conv:ok:{kind}:{value}", w),
            ]
        counts = await self.store.counts(queries, now)

        walk: FraudVerdict | None = None
        for i, (scope, who) in enumerate(walkers):
            seen, distinct = counts[2 * i], counts[2 * i + 1]
            if seen:
                continue  # the same number again is not a walk through a range
            out.record += [
                RateRule("seq", f"fraud:seqseen:{scope}:{who}:{number.e164}", _HUGE, sw),
                RateRule("seq", f"fraud:seq:{scope}:{who}:{number.prefix}", _HUGE, sw),
            ]
            if walk is None and distinct + 1 >= threshold:
                walk = FraudVerdict(
                    "sequential_numbers",
                    f"{scope} {who} -> prefix {number.prefix}",
                    {"distinct_numbers": distinct + 1, "window_s": sw, "threshold": threshold},
                    retry_after=sw,
                )
        if walk is not None:
            out.verdicts.append(walk)

        base = 2 * len(walkers)
        for j, (kind, value) in enumerate(kinds):
            total, young, ok = counts[base + 3 * j : base + 3 * j + 3]
            out.conversion[kind] = (total, young, ok)
            out.record.append(RateRule("conv", f"conv:sent:{kind}:{value}", _HUGE, w))
        if self.shadowed("budget_exhausted"):
            out.record += [
                RateRule(r.name, r.key, _HUGE, r.window) for r in self.budget_rules(number)
            ]
        return out

    def budget_rules(self, number: PhoneNumber) -> list[RateRule]:
        """The send budgets as rate rules. Unless the budget rule is in shadow mode, the
        engine adds them to the rate-limit hit, so they are counted and enforced in the
        same atomic step as the limits (exact under concurrency)."""
        s = self.settings
        return [
            RateRule("budget_global", "budget:global", limit, w)
            for limit, w in s.windows("fraud_budget_global")
        ] + [
            RateRule("budget_country", f"budget:country:{number.region}", limit, w)
            for limit, w in s.windows("fraud_budget_country")
        ]

    def budget_verdict(
        self, number: PhoneNumber, rule: str, count: int, retry_after: float
    ) -> FraudVerdict:
        scope = "global" if rule == "budget_global" else f"country {number.region}"
        return FraudVerdict("budget_exhausted", scope, {"sent": count}, retry_after=retry_after)

    async def _budget(self, number: PhoneNumber, now: float) -> FraudVerdict | None:
        """Shadow mode only: would the budget refuse? (Enforced budgets live in the hit.)"""
        rules = self.budget_rules(number)
        if not rules:
            return None
        d = await self.store.hit(rules, now, record=False)
        if d.allowed:
            return None
        assert d.rule is not None
        return self.budget_verdict(number, d.rule, d.count, d.retry_after)

    # -- after a send and after an approval ------------------------------------------

    async def after_send(
        self, number: PhoneNumber, assessment: Assessment, now: float
    ) -> list[FraudVerdict]:
        """The conversion watch, on the counts read before this send (plus this send).

        Only sends whose codes can no longer be typed count against the rate: sends
        younger than the code lifetime (this one included) are left out."""
        s = self.settings
        out = []
        for kind, subject in zip(("prefix", "country"), _subjects(number), strict=True):
            total, young, ok = assessment.conversion.get(kind, (0, 0, 0))
            sent = total - young
            if sent < s.fraud_conversion_min_sends:
                continue
            rate = ok / sent
            if rate >= s.fraud_conversion_min_rate:
                continue
            flag = f"fraud:suspended:{subject}"
            if await self.store.get_flag(flag, now) is not None:
                continue
            until = now + s.fraud_conversion_suspend
            figures: dict[str, float | int | str] = {
                "sent": sent,
                "approved": ok,
                "rate": round(rate, 3),
                "min_rate": s.fraud_conversion_min_rate,
                "min_sends": s.fraud_conversion_min_sends,
                "window_s": s.fraud_conversion_window,
                "until": until,
            }
            if not self.shadowed("low_conversion"):
                await self.store.set_flag(flag, json.dumps(figures, sort_keys=True), until)
            out.append(FraudVerdict("low_conversion", subject, figures, retry_after=until - now))
        return out

    async def record_approval(self, number: PhoneNumber, now: float) -> None:
        w = self.settings.fraud_conversion_window
        await self.store.hit(
            [
                RateRule("conv", f"conv:ok:{kind}:{value}", _HUGE, w)
                for kind, value in zip(("prefix", "country"), _subjects_values(number), strict=True)
            ],
            now,
        )


def _subjects_values(number: PhoneNumber) -> tuple[str, str]:
    return number.prefix, str(number.region)


def _subjects(number: PhoneNumber) -> tuple[str, str]:
    return f"prefix {number.prefix}", f"country {number.region}"


def _load_figures(raw: str) -> dict[str, float | int | str]:
    """A suspension's stored figures (JSON); a malformed flag still suspends."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int | float | str)}
