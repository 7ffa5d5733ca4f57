"""The conversion watch: the opt-in suspension of a prefix or a country whose sends
are never typed (``low_conversion``).

Admission (``admission.py``) is what keeps pumping cheap by default; it never
switches a scope off. An operator who wants the old circuit breaker as well sets
``OTPGUARD_FRAUD_SUSPEND_ON_LOW_CONVERSION=true``: then, over
``fraud_conversion_window`` seconds, a prefix (number minus its last four digits)
or a country with at least ``fraud_conversion_min_sends`` judged sends and an
approved/judged ratio below ``fraud_conversion_min_rate`` is suspended for
``fraud_conversion_suspend`` seconds (``guards.SuspensionGuard`` refuses its
unproven numbers; trusted numbers still pass). A send is judged once it is older
than ``fraud_observation_window`` seconds (default 60): real people type their
code within seconds, so the signal does not wait for the code to expire.

In shadow mode (``OTPGUARD_FRAUD_SHADOW=low_conversion``) the watch records what it
would have suspended as ``fraud.shadow`` events and suspends nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .config import FraudSection
from .destinations import Destination, is_email
from .guards import subjects, suspension_key
from .models import RateRule
from .stores.base import Store


@dataclass(frozen=True)
class FraudVerdict:
    rule: str  # low_conversion
    subject: str  # "prefix +4474001", "country GB"
    figures: dict[str, float | int | str] = field(default_factory=dict)
    retry_after: float = 0.0

    @property
    def reason(self) -> str:
        return f"fraud:{self.rule}"


def _values(number: Destination) -> tuple[tuple[str, str], ...]:
    if is_email(number):
        return (("domain", number.domain),)  # an address is judged by its domain
    return (("prefix", number.prefix), ("country", str(number.region)))


class ConversionWatch:
    def __init__(self, section: FraudSection, store: Store) -> None:
        self.section = section
        self.store = store
        self.enabled = section.suspend_on_low_conversion

    @property
    def shadowed(self) -> bool:
        return "low_conversion" in self.section.shadow

    def _counters(self, what: str, number: Destination) -> list[RateRule]:
        """The record-only counters of ``what`` (``sent``, ``ok``) for the number's
        prefix and country (an address: its domain); none when the watch is off."""
        if not self.enabled:
            return []
        w = self.section.conversion_window
        return [
            RateRule("conv", f"conv:{what}:{kind}:{value}", 0, w, record_only=True)
            for kind, value in _values(number)
        ]

    def send_rules(self, number: Destination) -> list[RateRule]:
        """Counters recorded with the send (in its atomic admit), when enabled."""
        return self._counters("sent", number)

    async def after_send(self, number: Destination, now: float) -> list[FraudVerdict]:
        """Judge the number's prefix and country on the counts after this send."""
        if not self.enabled:
            return []
        s = self.section
        w, young = s.conversion_window, s.observation_window
        queries: list[tuple[str, int]] = []
        for kind, value in _values(number):
            queries += [
                (f"conv:sent:{kind}:{value}", w),
                (f"conv:sent:{kind}:{value}", young),
                (f"conv:ok:{kind}:{value}", w),
            ]
        counts = await self.store.counts(queries, now)
        out = []
        for j, subject in enumerate(subjects(number)):
            total, recent, ok = counts[3 * j : 3 * j + 3]
            judged = total - recent
            if judged < s.conversion_min_sends:
                continue
            rate = ok / judged
            if rate >= s.conversion_min_rate:
                continue
            flag = suspension_key(subject)
            if await self.store.get_flag(flag, now) is not None:
                continue
            until = now + s.conversion_suspend
            figures: dict[str, float | int | str] = {
                "sent": judged,
                "approved": ok,
                "rate": round(rate, 3),
                "min_rate": s.conversion_min_rate,
                "min_sends": s.conversion_min_sends,
                "window_s": w,
                "until": until,
            }
            if not self.shadowed:
                await self.store.set_flag(flag, json.dumps(figures, sort_keys=True), until)
            out.append(FraudVerdict("low_conversion", subject, figures, retry_after=until - now))
        return out

    def approval_rules(self, number: Destination) -> list[RateRule]:
        """Counters recorded with an approval, when enabled."""
        return self._counters("ok", number)
