"""The alert rules (the table is in ``alerts.py``), fed the recent events in one pass:
the base class and the traffic rules here, the health rules in ``alert_health.py``.

Each rule is a small class: the engine makes one of each per evaluation, hands every
event of the evaluation's horizon to each rule's ``feed`` once, newest first, page by
page as the store returns them, then asks each for its ``findings``. A rule keeps only
its counters, never the events: an evaluation holds one page of events at a time, so
its memory does not grow with the traffic in the horizon (a busy hour is hundreds of
thousands of events, and every worker evaluates every ``alert_interval`` seconds).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .config import Settings
from .events import Event
from .stats import PASSED, REFUSED, SEND_TYPES, is_request
from .stores.base import Store

MAX_FINDINGS_PER_RULE = 20  # the busiest subjects only; an attack on 10,000 numbers is one page


@dataclass(frozen=True)
class Finding:
    """What a rule sees wrong now. ``key`` identifies the subject within the rule."""

    rule: str
    key: str
    subject: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        return f"{self.rule}:{self.key}"


@dataclass(frozen=True)
class Snapshot:
    """What every rule may look at besides the events: the time, settings, store."""

    now: float
    settings: Settings
    store: Store


class AlertRule:
    """One rule's figures for one evaluation."""

    name: ClassVar[str]

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.s = snap.settings

    def within(self, e: Event, seconds: float, *, end: float | None = None) -> bool:
        """Whether ``end - seconds <= e.ts <= end`` (``end`` defaults to now)."""
        end = self.snap.now if end is None else end
        return end - seconds <= e.ts <= end

    def feed(self, e: Event) -> None:
        """One event of the horizon (newest first). Rules that read no events skip it."""

    async def findings(self) -> list[Finding]:
        raise NotImplementedError


def busiest(counter: Counter[str], over: int) -> list[tuple[str, int]]:
    rows = [(k, n) for k, n in counter.items() if n > over]
    rows.sort(key=lambda kv: (-kv[1], kv[0]))
    return rows[:MAX_FINDINGS_PER_RULE]


# -- the rules ------------------------------------------------------------------------------


class RequestSpike(AlertRule):
    name = "request_spike"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.recent = self.before = 0

    def feed(self, e: Event) -> None:
        w, base, now = self.s.alert_spike_window, self.s.alert_spike_baseline, self.snap.now
        if not is_request(e):
            return
        if self.within(e, w):
            self.recent += e.count
        if self.within(e, base, end=now - w) and e.ts < now - w:
            self.before += e.count

    async def findings(self) -> list[Finding]:
        s = self.s
        w, base, recent = s.alert_spike_window, s.alert_spike_baseline, self.recent
        per_window = self.before * w / base
        if recent < s.alert_spike_min or recent <= s.alert_spike_factor * per_window:
            return []
        minutes = w // 60
        return [
            Finding(
                "request_spike",
                "all",
                "all requests",
                f"{recent} code requests in the last {minutes} min against "
                f"{per_window:.1f} per {minutes} min over the preceding {base // 60} min",
                {"recent": recent, "baseline_per_window": round(per_window, 2), "window_s": w},
            )
        ]


class HotNumber(AlertRule):
    name = "hot_number"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.counts: Counter[str] = Counter()
        self.masks: dict[str, str] = {}

    def feed(self, e: Event) -> None:
        if self.within(e, self.s.alert_hot_window) and is_request(e) and e.number_hash:
            self.counts[e.number_hash] += e.count
            self.masks.setdefault(e.number_hash, e.number_masked or "?")

    async def findings(self) -> list[Finding]:
        s, masks = self.s, self.masks
        return [
            Finding(
                "hot_number",
                h[:16],
                f"number {masks[h]}",
                f"{n} code requests for {masks[h]} in {s.alert_hot_window // 60} min "
                f"(threshold {s.alert_number_threshold})",
                {"requests": n, "number": masks[h], "ref": h[:12], "window_s": s.alert_hot_window},
            )
            for h, n in busiest(self.counts, s.alert_number_threshold)
        ]


class HotIp(AlertRule):
    name = "hot_ip"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.counts: Counter[str] = Counter()

    def feed(self, e: Event) -> None:
        if not (self.within(e, self.s.alert_hot_window) and is_request(e)):
            return
        if e.client_ip and e.client_ip != "unknown":
            self.counts[e.client_ip] += e.count

    async def findings(self) -> list[Finding]:
        s = self.s
        return [
            Finding(
                "hot_ip",
                ip,
                f"ip {ip}",
                f"{n} code requests from {ip} in {s.alert_hot_window // 60} min "
                f"(threshold {s.alert_ip_threshold})",
                {"requests": n, "ip": ip, "window_s": s.alert_hot_window},
            )
            for ip, n in busiest(self.counts, s.alert_ip_threshold)
        ]


def _low(sent: int, ok: int, s: Settings) -> bool:
    return sent >= s.alert_conversion_min_sends and ok / sent < s.alert_conversion_min_rate


class ConversionDrop(AlertRule):
    name = "conversion_drop"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.sent: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.prefixes: set[str] = set()

    def feed(self, e: Event) -> None:
        if not self.within(e, self.s.alert_conversion_window):
            return
        if e.type in SEND_TYPES and e.country:
            self.sent[e.country] += 1
        elif e.type == PASSED and e.country:
            self.ok[e.country] += 1
        # Events keep no prefix (with the masked number it would rebuild the number):
        # prefixes come from the fraud rules, which name the ones they watch.
        subject = str(e.details.get("subject", ""))
        if subject.startswith("prefix ") and (
            e.rule == "low_conversion" or (e.type == REFUSED and e.reason == "fraud:low_conversion")
        ):
            self.prefixes.add(subject.removeprefix("prefix "))

    async def findings(self) -> list[Finding]:
        s, sent, ok = self.s, self.sent, self.ok
        out = []
        minutes = s.alert_conversion_window // 60
        for country, n in sorted(sent.items()):
            if _low(n, ok[country], s):
                out.append(
                    Finding(
                        "conversion_drop",
                        f"country:{country}",
                        f"country {country}",
                        f"{ok[country]} approved of {n} sent to {country} in {minutes} min "
                        f"({ok[country] / n:.0%}, minimum {s.alert_conversion_min_rate:.0%})",
                        {"country": country, "sent": n, "approved": ok[country]},
                    )
                )
        fw, store, now = s.fraud_conversion_window, self.snap.store, self.snap.now
        for prefix in sorted(self.prefixes)[:MAX_FINDINGS_PER_RULE]:
            n = await store.count(f"conv:sent:prefix:{prefix}", fw, now)
            k = await store.count(f"conv:ok:prefix:{prefix}", fw, now)
            if _low(n, k, s):
                out.append(
                    Finding(
                        "conversion_drop",
                        f"prefix:{prefix}",
                        f"prefix {prefix}",
                        f"{k} approved of {n} sent to numbers {prefix}xxxx in {fw // 60} min "
                        "(SMS pumping looks like this)",
                        {"prefix": prefix, "sent": n, "approved": k},
                    )
                )
        return out
