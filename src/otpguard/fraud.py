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


class FraudRules:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def shadowed(self, rule: str) -> bool:
        return rule in self.settings.fraud_shadow

    # -- the checks, before a send ---------------------------------------------

    async def evaluate(self, number: PhoneNumber, client_ip: str, now: float) -> list[FraudVerdict]:
        """Every rule that would refuse this send (shadowed ones included)."""
        verdicts: list[FraudVerdict] = []
        budget = await self._budget(number, now) if self.shadowed("budget_exhausted") else None
        for v in (
            await self._suspended(number, now),
            budget,
            await self._sequential(number, client_ip, now),
        ):
            if v is not None:
                verdicts.append(v)
        return verdicts

    async def _suspended(self, number: PhoneNumber, now: float) -> FraudVerdict | None:
        for subject in (f"prefix {number.prefix}", f"country {number.region}"):
            raw = await self.store.get_flag(f"fraud:suspended:{subject}", now)
            if raw is not None:
                figures = _load_figures(raw)
                until = float(figures.get("until", now))
                return FraudVerdict("low_conversion", subject, figures, retry_after=until - now)
        return None

    def budget_rules(self, number: PhoneNumber) -> list[RateRule]:
        """The send budgets as rate rules. Unless the budget rule is in shadow mode, the
        engine adds them to the rate-limit hit, so they are counted and enforced in the
        same atomic step as the limits (exact under concurrency)."""
        s = self.settings
        return [
            RateRule("budget_global", f"budget:global:{w}", limit, w)
            for limit, w in s.windows("fraud_budget_global")
        ] + [
            RateRule("budget_country", f"budget:country:{number.region}:{w}", limit, w)
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

    async def _sequential(
        self, number: PhoneNumber, client_ip: str, now: float
    ) -> FraudVerdict | None:
        if client_ip == UNKNOWN_IP:
            return None  # the shared bucket is covered by the ip/network limits
        s = self.settings
        window, threshold = s.fraud_sequential_window, s.fraud_sequential_threshold
        for scope, who in (("ip", ip_key(client_ip)), ("network", network_of(client_ip))):
            seen = await self.store.get_flag(f"fraud:seq:{scope}:{who}:{number.e164}", now)
            if seen is not None:
                continue  # the same number again is not a walk through a range
            distinct = await self.store.count(
                f"fraud:seq:{scope}:{who}:{number.prefix}", window, now
            )
            if distinct + 1 >= threshold:
                return FraudVerdict(
                    "sequential_numbers",
                    f"{scope} {who} -> prefix {number.prefix}",
                    {"distinct_numbers": distinct + 1, "window_s": window, "threshold": threshold},
                    retry_after=window,
                )
        return None

    # -- bookkeeping, after a send and after an approval -------------------------

    async def record_send(
        self, number: PhoneNumber, client_ip: str, now: float
    ) -> list[FraudVerdict]:
        """Count the send; returns suspensions the conversion watch just decided."""
        s = self.settings
        w = s.fraud_conversion_window
        rules = [
            RateRule("conv", f"conv:sent:prefix:{number.prefix}", _HUGE, w),
            RateRule("conv", f"conv:sent:country:{number.region}", _HUGE, w),
        ]
        if self.shadowed("budget_exhausted"):  # otherwise counted by the engine's hit
            rules += [
                r.__class__(r.name, r.key, _HUGE, r.window) for r in self.budget_rules(number)
            ]
        if client_ip != UNKNOWN_IP:
            sw = s.fraud_sequential_window
            for scope, who in (("ip", ip_key(client_ip)), ("network", network_of(client_ip))):
                flag = f"fraud:seq:{scope}:{who}:{number.e164}"
                if await self.store.get_flag(flag, now) is None:
                    rules.append(
                        RateRule("seq", f"fraud:seq:{scope}:{who}:{number.prefix}", _HUGE, sw)
                    )
                    await self.store.set_flag(flag, "1", now + sw)
        await self.store.hit(rules, now)
        return await self._conversion_watch(number, now)

    async def record_approval(self, number: PhoneNumber, now: float) -> None:
        w = self.settings.fraud_conversion_window
        await self.store.hit(
            [
                RateRule("conv", f"conv:ok:prefix:{number.prefix}", _HUGE, w),
                RateRule("conv", f"conv:ok:country:{number.region}", _HUGE, w),
            ],
            now,
        )

    async def _conversion_watch(self, number: PhoneNumber, now: float) -> list[FraudVerdict]:
        s = self.settings
        w = s.fraud_conversion_window
        grace = min(s.code_ttl, w)
        out = []
        for kind, value in (("prefix", number.prefix), ("country", str(number.region))):
            key = f"conv:sent:{kind}:{value}"
            # Only sends whose codes can no longer be typed count against the rate.
            total = await self.store.count(key, w, now)
            if total < s.fraud_conversion_min_sends:
                continue  # the common case: one count, no more
            sent = total - await self.store.count(key, grace, now)
            if sent < s.fraud_conversion_min_sends:
                continue
            ok = await self.store.count(f"conv:ok:{kind}:{value}", w, now)
            rate = ok / sent
            if rate >= s.fraud_conversion_min_rate:
                continue
            subject = f"{kind} {value}"
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
                "window_s": w,
                "until": until,
            }
            if not self.shadowed("low_conversion"):
                await self.store.set_flag(flag, json.dumps(figures, sort_keys=True), until)
            out.append(FraudVerdict("low_conversion", subject, figures, retry_after=until - now))
        return out


def _load_figures(raw: str) -> dict[str, float | int | str]:
    """A suspension's stored figures (JSON); a malformed flag still suspends."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int | float | str)}
