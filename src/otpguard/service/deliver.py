"""Delivery: the message handed to the channel's transport, what is recorded after
it left (or may have), and the provider's delivery reports that come back later."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..destinations import Destination
from ..errors import DeliveryError, StorageError
from ..events import Event, EventType
from ..guards import undeliverable_key
from ..models import RateRule, Status, Verification
from ..stores.base import EventQuery
from ..transports.base import Message
from ..transports.errors import reason_for_provider_code
from .base import (
    DELIVERY_REPORT_WINDOW,
    UNDELIVERABLE_REASONS,
    UNDELIVERED_STATUSES,
    DeliveryReport,
    VerifierBase,
)

log = logging.getLogger("otpguard.service")


class Delivering(VerifierBase):
    """Sending a code's message, and what follows it."""

    async def _deliver(
        self,
        v: Verification,
        number: Destination,
        code: str,
        ip: str,
        now: float,
        kind: EventType,
        *before: Event,
        allowlisted: bool = False,
    ) -> Verification:
        """Send, then record the outcome; ``before`` (stored by the admission already)
        is announced with it, first (``emit``'s ``stored``).

        Returns ``v`` with ``delivery`` set: ``sent``, or ``unknown`` when the
        provider may have sent it but its answer was lost (a timeout after the
        request was written): the verification stays pending, its code usable, and
        the status callback settles it. Once a message may have left, nothing that
        fails afterwards turns the answer into an error. ``sent_event``: the id of
        the event that recorded the message (a shell lists the sends without
        reading it back), None if it may not have been stored."""
        transport = self._transport_for(v.channel)
        try:
            receipt = await transport.send(self._message(v, code, now))
        except DeliveryError as exc:
            if exc.outcome_unknown:
                details: dict[str, Any] = {"provider": transport.name, "outcome": "unknown"}
                eid = await self._sent(
                    v, number, ip, now, kind, details, "outcome_unknown", before, allowlisted
                )
                return v.with_(delivery="unknown", sent_event=eid)
            await self._not_delivered(v, number, ip, now, exc, before)
            raise
        details = {"provider": receipt.provider, "provider_id": receipt.provider_id}
        eid = await self._sent(v, number, ip, now, kind, details, None, before, allowlisted)
        return v.with_(delivery="sent", sent_event=eid)

    def _message(self, v: Verification, code: str, now: float) -> Message:
        """The only object that holds the code: what the transport renders and sends."""
        return Message(
            verification_id=v.id,
            to=v.to,
            channel=v.channel,
            code=code,
            service_name=v.service_name or self.settings.service_name,
            ttl_seconds=max(1, int(v.expires_at - now)),
            locale=v.locale or "en",
            country=v.country,
            amount=v.binding.display_amount,
            payee=v.payee,
        )

    async def _not_delivered(
        self,
        v: Verification,
        number: Destination,
        ip: str,
        now: float,
        exc: DeliveryError,
        before: Sequence[Event],
    ) -> None:
        """The provider refused the message: the verification fails, an undeliverable
        number is remembered for a while, and the refusal is recorded."""
        await self.store.transition(v.id, [Status.PENDING], Status.FAILED, now)
        if exc.reason in UNDELIVERABLE_REASONS and self.settings.undeliverable_ttl > 0:
            await self.store.set_flag(
                undeliverable_key(v.to), exc.reason, now + self.settings.undeliverable_ttl
            )
        await self.emit(
            self._event(
                EventType.DELIVERY_FAILED,
                now,
                number=number,
                v=v,
                client_ip=ip,
                reason=exc.reason,
                provider_code=exc.provider_code,
            ),
            stored=before,
        )

    async def _sent(
        self,
        v: Verification,
        number: Destination,
        ip: str,
        now: float,
        kind: EventType,
        details: dict[str, Any],
        reason: str | None,
        before: Sequence[Event],
        allowlisted: bool,
    ) -> str | None:
        """The bookkeeping after a message left (or may have): the events and the
        conversion watch; the id of the message's event. A store failure here is
        logged, never answered (the message is out, and a 503 would say it was
        not): None then, the event perhaps not stored."""
        try:
            verdicts = []
            if not allowlisted:
                verdicts = await self.watch.after_send(number, now)
            events = [
                self._event(kind, now, number=number, v=v, client_ip=ip, reason=reason,
                            details=details),
            ]  # fmt: skip
            type_ = EventType.FRAUD_SHADOW if self.watch.shadowed else EventType.FRAUD_SUSPENDED
            for verdict in verdicts:
                events.append(
                    self._event(
                        type_,
                        now,
                        number=number,
                        client_ip=ip,
                        channel=v.channel.value,
                        reason=verdict.reason,
                        rule=verdict.rule,
                        details={"subject": verdict.subject, **verdict.figures},
                    )
                )
            await self.emit(*events, stored=before)
        except StorageError:
            log.warning("message for %s handed to the provider; its events were lost", v.id)
            return None
        return events[0].id

    # -- delivery reports -------------------------------------------------------------

    async def record_delivery_status(
        self,
        verification_id: str | None,
        status: str,
        error_code: int | None = None,
        provider_id: str | None = None,
    ) -> DeliveryReport:
        """A provider's delivery report (Twilio status callback) becomes an event, once.

        Counted only for a message this verification's sends recorded (by provider
        id), within ``DELIVERY_REPORT_WINDOW`` of that send, and once per (message,
        status): a replayed report changes nothing. The once-only is a limit-1 rate
        rule, decided and recorded in one atomic ``hit``."""
        now = self.clock()
        v = await self.store.get_verification(verification_id) if verification_id else None
        status = (status or "unknown")[:32]
        provider_id = (provider_id or "")[:64]
        if v is None or not provider_id:
            return DeliveryReport.UNKNOWN_MESSAGE
        sent_at = await self._reported_send(v, provider_id)
        if sent_at is None:
            return DeliveryReport.UNKNOWN_MESSAGE
        if now - sent_at > DELIVERY_REPORT_WINDOW:
            return DeliveryReport.TOO_LATE
        once = RateRule(
            "delivery_report", f"report:{provider_id}:{status}", 1, DELIVERY_REPORT_WINDOW
        )
        if not (await self.store.hit([once], now)).allowed:
            return DeliveryReport.DUPLICATE
        await self._settle(v, status, error_code, now)
        await self.emit(
            self._event(
                EventType.DELIVERY_STATUS,
                now,
                v=v,
                reason=status,
                provider_code=error_code,
                details={"provider_id": provider_id},
            )
        )
        return DeliveryReport.RECORDED

    async def _reported_send(self, v: Verification, provider_id: str) -> float | None:
        """When the newest send of ``v`` the report can be about was made: the one with
        that provider id, or one whose answer was lost (it has no provider id, and its
        report settles it). None: no such send."""
        sends = await self.store.list_events(
            EventQuery(
                types=(EventType.SENT.value, EventType.RESENT.value),
                number_hash=self.number_hashes(v.to),  # sends before a key was added too
                since=v.created_at - 1,
                limit=100,
            )
        )
        sent = [
            e.ts
            for e in sends
            if e.verification_id == v.id
            and (
                e.details.get("provider_id") == provider_id or e.details.get("outcome") == "unknown"
            )
        ]
        return max(sent) if sent else None

    async def _settle(
        self, v: Verification, status: str, error_code: int | None, now: float
    ) -> None:
        """What a report changes: a message that can never arrive fails its pending
        verification (a new start may follow); an undeliverable number is remembered."""
        if status in UNDELIVERED_STATUSES and v.status is Status.PENDING:
            await self.store.transition(v.id, [Status.PENDING], Status.FAILED, now)
        if error_code is not None and self.settings.undeliverable_ttl > 0:
            reason = reason_for_provider_code(error_code)
            if reason in UNDELIVERABLE_REASONS:
                await self.store.set_flag(
                    undeliverable_key(v.to), reason, now + self.settings.undeliverable_ttl
                )
