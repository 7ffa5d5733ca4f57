"""The alert job: opens, updates and resolves alerts from what the rules find.

Every ``alert_interval`` seconds the evaluator reads the event counts of the recent
minutes (``counters.py``: what it reads does not grow with traffic; a window is read
in the whole minutes that start in it) and a few rate counters, asks each rule
(``alert_rules.py``, the table of what makes each fire) what is wrong *now*, and
compares with the open alerts: a new symptom opens an alert (stored, an
``alert.opened`` event, a notice to every sink); a symptom that persists updates the
open alert quietly (one notice per incident); an open alert whose symptom is gone
resolves (stored, an ``alert.resolved`` event, a notice). A symptom that comes back
within ``alert_cooldown`` seconds of its resolution re-opens the same alert without
notifying anyone again (flapping is one incident). Everything is read and written
through the Verifier.

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

from .alert_rules import RULE_NAMES, RULES, SNAPSHOT_FAMILIES, STORE_DOWN, Rule, Snapshot, Symptom
from .errors import StorageError
from .events import Event, EventType, new_event_id
from .service import Verifier
from .sinks import Dispatcher, Notice
from .stores.base import Alert

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("otpguard.alerts")

# -- the evaluator ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    opened: list[Alert]
    resolved: list[Alert]
    open: list[Alert]


class AlertEvaluator:
    """Evaluates :data:`RULES`; ``evaluate(now)`` is one pass, ``run(stop)`` the job."""

    def __init__(
        self,
        verifier: Verifier,
        dispatcher: Dispatcher,
        *,
        metrics: Metrics | None = None,
        rules: Sequence[Rule] = RULES,
    ) -> None:
        self.verifier = verifier
        self.section = verifier.settings.alerts
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.rules = list(rules)
        self._open: dict[str, Alert] = {}
        self._resolved: dict[str, Alert] = {}
        self._loaded = False

    async def _load(self, now: float) -> None:
        if self._loaded:
            return
        for a in await self.verifier.alerts(status="open"):
            self._open[a.id] = a
        for a in await self.verifier.alerts(since=now - self.section.cooldown, status="resolved"):
            self._resolved.setdefault(a.id, a)
        self._loaded = True

    async def _snapshot(self, now: float) -> Snapshot:
        s = self.section
        horizon = max(
            s.spike_window + s.spike_baseline,
            s.conversion_window,
            s.hot_window,
        )
        counts = await self.verifier.event_counts(now - horizon, now + 1e-6, SNAPSHOT_FAMILIES)
        return Snapshot(now, s, self.verifier, counts)

    async def _symptoms(self, now: float) -> tuple[list[Symptom], set[str]]:
        """What every rule finds wrong now, and the rules that could judge: all of
        them, or only ``store_errors`` when the store fails (the other alerts stay)."""
        try:
            await self._load(now)
            snap = await self._snapshot(now)
            symptoms: list[Symptom] = []
            for rule in self.rules:
                symptoms.extend(await rule(snap))
            return symptoms, {f.__name__ for f in self.rules}
        except StorageError:
            return [STORE_DOWN], {"store_errors"}

    async def evaluate(self, now: float | None = None) -> Evaluation:
        """One pass: open, update and resolve alerts; notify sinks without awaiting them."""
        now = self.verifier.clock() if now is None else now
        symptoms, judged = await self._symptoms(now)
        current = {f.alert_id: f for f in symptoms}
        opened: list[Alert] = []
        for aid, f in current.items():
            alert, is_new = await self._raise(aid, f, now)
            self._open[aid] = alert
            if is_new:
                opened.append(alert)
        resolved: list[Alert] = []
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

    async def _raise(self, aid: str, f: Symptom, now: float) -> tuple[Alert, bool]:
        """The open alert for symptom ``f``, stored: the open one updated quietly, one
        resolved within ``alert_cooldown`` re-opened quietly (a flap), or a new one,
        announced (True)."""
        existing = self._open.get(aid)
        if existing is not None:
            details = {**existing.details, **f.details}
            alert = replace(existing, updated_at=now, message=f.message, details=details)
            await self._save(alert)
            return alert, False
        previous = self._resolved.pop(aid, None)
        cooled = (
            previous is None
            or previous.resolved_at is None
            or now - previous.resolved_at >= self.section.cooldown
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
            return alert, False
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
        return alert, True

    async def _save(self, alert: Alert) -> None:
        try:
            await self.verifier.save_alert(alert)
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
            await self.verifier.emit(event)

    async def run(self, stop: asyncio.Event) -> None:
        """The ``app.state.jobs`` job: evaluate every ``alert_interval`` seconds."""
        while not stop.is_set():
            try:
                await self.evaluate()
            except Exception:  # a bug in a rule must not stop monitoring for good
                log.exception("alert evaluation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.section.interval)
