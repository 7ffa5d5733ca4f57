"""The health alert rules: refused destinations, delivery and provider failures,
admission pressure, send budgets and store errors (see ``alert_rules.py``)."""

from __future__ import annotations

from collections import Counter

from .alert_rules import AlertRule, Finding, Snapshot, busiest
from .events import Event
from .service import UNDELIVERABLE_REASONS
from .stats import DELIVERY_FAILED, REFUSED, SEND_TYPES, is_delivery_failure

DESTINATION_REASONS = frozenset(
    {"premium_rate", "shared_cost", "country_not_allowed", "blocklisted"}
)


class RefusedDestination(AlertRule):
    name = "refused_destination"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.counts: Counter[str] = Counter()

    def feed(self, e: Event) -> None:
        reason = e.reason or ""
        if (
            e.type == REFUSED
            and (reason in DESTINATION_REASONS or reason.startswith("number_type:"))
            and self.within(e, self.s.alert_hot_window)
        ):
            self.counts[reason] += e.count

    async def findings(self) -> list[Finding]:
        s = self.s
        return [
            Finding(
                "refused_destination",
                reason,
                f"destination {reason}",
                f"{n} requests refused as {reason} in {s.alert_hot_window // 60} min",
                {"reason": reason, "refused": n},
            )
            for reason, n in busiest(self.counts, s.alert_refused_destination_threshold - 1)
        ]


class DeliveryFailures(AlertRule):
    name = "delivery_failures"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.failed = self.attempted = 0

    def feed(self, e: Event) -> None:
        if not self.within(e, self.s.alert_hot_window):
            return
        if e.type in SEND_TYPES or e.type == DELIVERY_FAILED:
            self.attempted += e.count
        if is_delivery_failure(e):
            self.failed += e.count

    async def findings(self) -> list[Finding]:
        s, failed, attempted = self.s, self.failed, self.attempted
        if failed < s.alert_delivery_failure_min:
            return []
        rate = failed / max(attempted, failed)
        if rate < s.alert_delivery_failure_rate:
            return []
        return [
            Finding(
                "delivery_failures",
                "all",
                "deliveries",
                f"{failed} of {max(attempted, failed)} deliveries failed in "
                f"{s.alert_hot_window // 60} min ({rate:.0%})",
                {"failed": failed, "attempted": attempted, "rate": round(rate, 3)},
            )
        ]


class AdmissionPressure(AlertRule):
    """Admission refusals and challenges per scope, with the figures behind them."""

    name = "admission_pressure"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.refused: Counter[str] = Counter()
        self.challenged: Counter[str] = Counter()
        self.unconverted: dict[str, int] = {}

    def feed(self, e: Event) -> None:
        scope = e.details.get("scope") if e.type == REFUSED else None
        if not isinstance(scope, str) or not self.within(e, self.s.alert_hot_window):
            return
        if e.reason == "challenge_required":
            self.challenged[scope] += e.count
        else:
            self.refused[scope] += e.count
        self.unconverted.setdefault(scope, int(e.details.get("unconverted", 0) or 0))

    async def findings(self) -> list[Finding]:
        s, refused, challenged = self.s, self.refused, self.challenged
        return [
            Finding(
                "admission_pressure",
                scope,
                scope,
                f"{scope} is under pressure: {refused[scope]} starts refused and "
                f"{challenged[scope]} challenged in {s.alert_hot_window // 60} min; "
                f"{self.unconverted[scope]} codes sent there recently were never typed",
                {
                    "scope": scope,
                    "refused": refused[scope],
                    "challenged": challenged[scope],
                    "unconverted": self.unconverted[scope],
                },
            )
            for scope, _ in busiest(refused + challenged, s.alert_admission_threshold - 1)
        ]


class BudgetNearCap(AlertRule):
    """Reads the store's budget counters, not events."""

    name = "budget_near_cap"

    async def findings(self) -> list[Finding]:
        s, store, now = self.s, self.snap.store, self.snap.now
        scopes = [
            ("global", "budget:global", limit, w) for limit, w in s.windows("fraud_budget_global")
        ]
        scopes += [
            (f"country {c}", f"budget:country:{c}", limit, w)
            for c in s.allowed_countries
            for limit, w in s.windows("fraud_budget_country")
        ]
        out = []
        for scope, key, limit, w in scopes:
            used = await store.count(key, w, now)
            if used >= s.alert_budget_ratio * limit:
                span = f"{w // 3600}h" if w % 3600 == 0 else f"{w // 60}m"
                out.append(
                    Finding(
                        "budget_near_cap",
                        f"{scope.replace(' ', ':')}:{w}",
                        f"{scope} budget {span}",
                        f"{used} of {limit} sends of the {scope} {span} budget used "
                        f"({used / limit:.0%}; sends stop at 100%)",
                        {"scope": scope, "used": used, "limit": limit, "window_s": w},
                    )
                )
        return out


class ProviderErrors(AlertRule):
    name = "provider_errors"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.codes: Counter[str] = Counter()

    def feed(self, e: Event) -> None:
        if (
            e.type == DELIVERY_FAILED
            and (e.reason or "") not in UNDELIVERABLE_REASONS
            and self.within(e, self.s.alert_hot_window)
        ):
            self.codes[str(e.provider_code) if e.provider_code is not None else "none"] += 1

    async def findings(self) -> list[Finding]:
        s, codes = self.s, self.codes
        n = sum(codes.values())
        if n < s.alert_provider_error_threshold:
            return []
        return [
            Finding(
                "provider_errors",
                "provider",
                "SMS/voice provider",
                f"{n} provider errors in {s.alert_hot_window // 60} min "
                f"(codes: {', '.join(f'{c} x{k}' for c, k in codes.most_common(5))})",
                {"errors": n, "provider_codes": dict(codes.most_common(10))},
            )
        ]


class StoreErrors(AlertRule):
    name = "store_errors"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.n = 0

    def feed(self, e: Event) -> None:
        if e.type == "store.error" and self.within(e, self.s.alert_hot_window):
            self.n += 1

    async def findings(self) -> list[Finding]:
        if not self.n:
            return []
        return [
            Finding(
                "store_errors",
                "store",
                "store",
                f"{self.n} store errors recorded",
                {"errors": self.n},
            )
        ]
