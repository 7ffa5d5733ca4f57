"""Alert rules over the stored events, and the engine that opens and resolves alerts.

Every ``alert_interval`` seconds the engine reads the recent events (with the repeated
refusals counted per minute, ``refusals.py``) and a few store counters, asks each rule
what is wrong *now*, and compares with the open alerts: a new finding opens an alert
(stored, an ``alert.opened`` event, a notice to every sink); a finding that persists
updates the open alert quietly (one notice per incident); an open alert whose finding is
gone resolves (stored, an ``alert.resolved`` event, a notice). A finding that comes back
within ``alert_cooldown`` seconds of its resolution re-opens the same alert without
notifying anyone again (flapping is one incident).

=================== ===================================================================
rule                fires when (settings, defaults in docs/monitoring.md)
=================== ===================================================================
request_spike       requests in the last ``alert_spike_window`` s >= ``alert_spike_min``
                    and > ``alert_spike_factor`` x the average per window over the
                    preceding ``alert_spike_baseline`` s
hot_number          one number (grouped by its keyed hash) made more than
                    ``alert_number_threshold`` requests in ``alert_hot_window`` s
hot_ip              one client IP made more than ``alert_ip_threshold`` requests in
                    ``alert_hot_window`` s
conversion_drop     a country, or a prefix the fraud rules flagged, had at least
                    ``alert_conversion_min_sends`` sends in ``alert_conversion_window`` s
                    and approved/sent below ``alert_conversion_min_rate``
refused_destination ``alert_refused_destination_threshold`` or more requests for premium-
                    rate, shared-cost, blocklisted or non-allowed destinations (per reason)
                    in ``alert_hot_window`` s
delivery_failures   at least ``alert_delivery_failure_min`` failed deliveries in
                    ``alert_hot_window`` s and failed/attempted >= ``alert_delivery_failure_rate``
admission_pressure  ``alert_admission_threshold`` or more starts refused or challenged by
                    one admission scope (a country, a number block, all traffic, an API
                    key) in ``alert_hot_window`` s: codes sent there are not being typed
budget_near_cap     a send budget (``fraud_budget_global``, ``fraud_budget_country``) is
                    used to ``alert_budget_ratio`` of its cap
provider_errors     ``alert_provider_error_threshold`` or more provider errors (not a bad
                    destination: timeouts, 5xx, auth) in ``alert_hot_window`` s
store_errors        the store fails during evaluation, or ``store.error`` events were
                    recorded in ``alert_hot_window`` s
=================== ===================================================================

Several worker processes each run this job; run the alert job in one of them only
(or accept one notice per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .alert_health import (
    AdmissionPressure,
    BudgetNearCap,
    DeliveryFailures,
    ProviderErrors,
    RefusedDestination,
    StoreErrors,
)
from .alert_rules import (
    AlertRule,
    ConversionDrop,
    Finding,
    HotIp,
    HotNumber,
    RequestSpike,
    Snapshot,
)
from .errors import StorageError
from .events import Event, EventType, new_event_id
from .service import Verifier
from .sinks import Dispatcher, Notice
from .stats import activity_pages
from .stores.base import Alert

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("otpguard.alerts")

RULES: tuple[type[AlertRule], ...] = (
    RequestSpike,
    HotNumber,
    HotIp,
    ConversionDrop,
    RefusedDestination,
    DeliveryFailures,
    AdmissionPressure,
    BudgetNearCap,
    ProviderErrors,
    StoreErrors,
)
RULE_NAMES = tuple(r.name for r in RULES)

STORE_DOWN = Finding(
    "store_errors", "store", "store", "the store failed while alerts were evaluated"
)


# -- the engine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    opened: list[Alert]
    resolved: list[Alert]
    open: list[Alert]


class AlertEngine:
    """Evaluates :data:`RULES`; ``evaluate(now)`` is one pass, ``run(stop)`` the job."""

    def __init__(
        self,
        verifier: Verifier,
        dispatcher: Dispatcher,
        *,
        metrics: Metrics | None = None,
        rules: Sequence[type[AlertRule]] = RULES,
    ) -> None:
        self.verifier = verifier
        self.settings = verifier.settings
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.rules = list(rules)
        self._open: dict[str, Alert] = {}
        self._resolved: dict[str, Alert] = {}
        self._loaded = False

    async def _load(self, now: float) -> None:
        if self._loaded:
            return
        store = self.verifier.store
        for a in await store.list_alerts(status="open"):
            self._open[a.id] = a
        for a in await store.list_alerts(
            since=now - self.settings.alert_cooldown, status="resolved"
        ):
            self._resolved.setdefault(a.id, a)
        self._loaded = True

    async def _findings(self, now: float) -> list[Finding]:
        """Every rule's findings: one pass over the events of the longest rule window,
        one page at a time (no evaluation holds the whole horizon in memory)."""
        s = self.settings
        horizon = max(
            s.alert_spike_window + s.alert_spike_baseline,
            s.alert_conversion_window,
            s.alert_hot_window,
        )
        snap = Snapshot(now, s, self.verifier.store)
        rules = [rule(snap) for rule in self.rules]
        async for page in activity_pages(self.verifier.store, now - horizon, now + 1e-6):
            for e in page:
                for r in rules:
                    r.feed(e)
        findings: list[Finding] = []
        for r in rules:
            findings.extend(await r.findings())
        return findings

    async def evaluate(self, now: float | None = None) -> Evaluation:
        """One pass: open, update and resolve alerts; notify sinks without awaiting them."""
        now = self.verifier.clock() if now is None else now
        try:
            await self._load(now)
            findings = await self._findings(now)
            judged = {r.name for r in self.rules}
        except StorageError:
            # Nothing else can be judged without the store: keep other alerts as they are.
            findings, judged = [STORE_DOWN], {"store_errors"}
        current = {f.alert_id: f for f in findings}
        opened: list[Alert] = []
        resolved: list[Alert] = []

        for aid, f in current.items():
            existing = self._open.get(aid)
            if existing is not None:
                alert = replace(
                    existing,
                    updated_at=now,
                    message=f.message,
                    details={**existing.details, **f.details},
                )
                await self._save(alert)
                self._open[aid] = alert
                continue
            previous = self._resolved.pop(aid, None)
            cooled = (
                previous is None
                or previous.resolved_at is None
                or now - previous.resolved_at >= self.settings.alert_cooldown
            )
            if previous is not None and not cooled:
                flaps = int(previous.details.get("flaps", 0)) + 1
                alert = replace(
                    previous,
                    status="open",
                    updated_at=now,
                    resolved_at=None,
                    message=f.message,
                    details={**f.details, "flaps": flaps, "notified": False},
                )
                await self._save(alert)
            else:
                alert = Alert(
                    id=aid,
                    rule=f.rule,
                    subject=f.subject,
                    status="open",
                    opened_at=now,
                    updated_at=now,
                    message=f.message,
                    details={**f.details, "notified": True},
                )
                await self._save(alert)
                await self._announce(alert, "opened", now)
                opened.append(alert)
            self._open[aid] = alert

        for aid, alert in list(self._open.items()):
            if aid in current or alert.rule not in judged:
                continue
            done = replace(alert, status="resolved", updated_at=now, resolved_at=now)
            del self._open[aid]
            self._resolved[aid] = done
            await self._save(done)
            if alert.details.get("notified", True):
                await self._announce(done, "resolved", now)
                resolved.append(done)

        if self.metrics is not None:
            by_rule = dict.fromkeys(RULE_NAMES, 0)
            for a in self._open.values():
                by_rule[a.rule] = by_rule.get(a.rule, 0) + 1
            self.metrics.set_open_alerts(by_rule)
        return Evaluation(opened, resolved, sorted(self._open.values(), key=lambda a: a.id))

    async def _save(self, alert: Alert) -> None:
        try:
            await self.verifier.store.put_alert(alert)
        except StorageError:
            log.warning("could not store alert %s: store unavailable", alert.id)

    async def _announce(self, alert: Alert, state: str, now: float) -> None:
        self.dispatcher.submit(Notice(state, alert))
        etype = EventType.ALERT_OPENED if state == "opened" else EventType.ALERT_RESOLVED
        event = Event(
            type=etype.value,
            ts=now,
            id=new_event_id(now),
            rule=alert.rule,
            reason=state,
            details={"alert_id": alert.id, "subject": alert.subject, "message": alert.message},
        )
        with contextlib.suppress(StorageError):
            await self.verifier._emit(event)

    async def run(self, stop: asyncio.Event) -> None:
        """The ``app.state.jobs`` job: evaluate every ``alert_interval`` seconds."""
        while not stop.is_set():
            try:
                await self.evaluate()
            except Exception:  # a bug in a rule must not stop monitoring for good
                log.exception("alert evaluation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.alert_interval)
