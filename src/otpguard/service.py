"""The engine: start / resend / check / cancel / get.

The only place where policy meets storage and delivery. The HTTP API, the CLI
and embedded users are thin shells over :class:`Verifier`.

Order of a send, each refusal before any message leaves::

    parse number -> destination policy -> development guard -> undeliverable memory
    -> fraud rules -> rate limits (atomic, all or nothing) -> store -> transport

Order of a check::

    well-formed code -> find verification -> failed-check limits (peek)
    -> count the attempt (atomic, before comparing) -> compare (constant time)
    -> approve (atomic, exactly once) | record the failure, lock at the cap

If the store cannot answer, nothing is sent and nothing is approved
(``StorageError``, HTTP 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import limits
from .clock import Clock, system_clock
from .codes import Keyring, generate_code, is_well_formed
from .config import Settings
from .errors import (
    ConfigError,
    Conflict,
    DeliveryError,
    DestinationRefused,
    InvalidRequest,
    NotFound,
    OtpguardError,
    RateLimited,
    StorageError,
)
from .events import Event, EventType, log_event, mask_number, new_event_id
from .fraud import Assessment, FraudRules, FraudVerdict
from .models import AttemptOutcome, Channel, Status, Verification
from .phone import DestinationPolicy, PhoneNumber, parse
from .stores.base import Store
from .transports.base import Message, Transport, pick_locale

log = logging.getLogger("otpguard.service")

# Reasons after which a number is remembered as undeliverable for a while.
UNDELIVERABLE_REASONS = frozenset(
    {"invalid_number", "not_sms_capable", "unroutable", "unsubscribed", "country_not_permitted"}
)
VERIFICATION_GRACE = 3600.0  # keep finished verifications this long after expiry

EventListener = Callable[[Event], None]


@dataclass(frozen=True)
class CheckResult:
    valid: bool
    status: Status
    attempts_remaining: int
    verification: Verification


def _channel(value: str | Channel) -> Channel:
    try:
        return Channel(value)
    except ValueError:
        raise InvalidRequest(
            f"'channel' must be one of {', '.join(c.value for c in Channel)}"
        ) from None


def new_verification_id() -> str:
    return "VE" + secrets.token_hex(16)


class Verifier:
    """Start, resend, check and cancel verifications. Use as an async context manager."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        transport: Transport,
        *,
        clock: Clock = system_clock,
        keyring: Keyring | None = None,
        listeners: Sequence[EventListener] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.clock = clock
        self.keyring = keyring or settings.keyring()
        self.listeners = list(listeners)
        self.policy = DestinationPolicy.from_settings(settings)
        self.fraud = FraudRules(settings, store)
        try:
            self._dev_allowed = frozenset(
                parse(n, settings.default_region).e164 for n in settings.dev_allowed_numbers
            )
        except InvalidRequest as exc:
            raise ConfigError(f"OTPGUARD_DEV_ALLOWED_NUMBERS: {exc.message}") from None
        self._rate_horizon = float(limits.longest_window(settings))

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()

    async def aclose(self) -> None:
        try:
            await self.transport.aclose()
        finally:
            await self.store.aclose()

    async def __aenter__(self) -> Verifier:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- events -----------------------------------------------------------------

    def _event(
        self,
        type_: EventType,
        now: float,
        *,
        number: PhoneNumber | str | None = None,
        v: Verification | None = None,
        **fields: Any,
    ) -> Event:
        e164 = number.e164 if isinstance(number, PhoneNumber) else number
        country = number.region if isinstance(number, PhoneNumber) else None
        if v is not None:
            e164 = e164 or v.to
            country = country or v.country
            fields.setdefault("verification_id", v.id)
            fields.setdefault("channel", v.channel.value)
        return Event(
            type=type_.value,
            ts=now,
            id=new_event_id(now),
            number_masked=mask_number(e164) if e164 else None,
            number_hash=self.keyring.keyed_hash("number", e164) if e164 else None,
            country=fields.pop("country", country),
            **fields,
        )

    async def _emit(self, *events: Event) -> None:
        await self.store.add_events(events)
        for event in events:
            if self.settings.log_events:
                log_event(event)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:  # a monitoring bug must never break verification
                    log.exception("event listener failed")

    async def _refuse(
        self,
        exc: OtpguardError,
        now: float,
        number: PhoneNumber | None,
        client_ip: str,
        channel: Channel | None,
        rule: str | None = None,
        **details: Any,
    ) -> OtpguardError:
        """Record a refusal as an event and return the exception to raise."""
        fields: dict[str, Any] = {"reason": getattr(exc, "reason", exc.code), "rule": rule}
        if isinstance(exc, RateLimited):
            fields["reason"] = "rate_limited"
            fields["rule"] = exc.rule
            details.setdefault("retry_after", exc.retry_after)
        with contextlib.suppress(StorageError):  # the refusal stands even if the event is lost
            await self._emit(
                self._event(
                    EventType.REFUSED,
                    now,
                    number=number,
                    client_ip=client_ip,
                    channel=channel.value if channel else None,
                    details=details,
                    **fields,
                )
            )
        return exc

    async def _refuse_fraud(
        self, verdict: FraudVerdict, now: float, number: PhoneNumber, ip: str, ch: Channel
    ) -> OtpguardError:
        """A fraud rule's refusal, with the figures behind it in the event."""
        return await self._refuse(
            DestinationRefused(verdict.reason),
            now,
            number,
            ip,
            ch,
            rule=verdict.rule,
            subject=verdict.subject,
            **verdict.figures,
        )

    # -- sending ----------------------------------------------------------------

    async def start(
        self,
        to: str,
        channel: str | Channel = Channel.SMS,
        client_ip: str | None = None,
        locale: str | None = None,
        *,
        code_length: int | None = None,
        service_name: str | None = None,
    ) -> Verification:
        """Create a verification, send its code, return it (never the code).

        ``code_length`` (6-10) and ``service_name`` override the settings for this
        verification (the Twilio Verify-compatible API uses them per service)."""
        now = self.clock()
        ip = limits.normalize_ip(client_ip)
        ch = _channel(channel)
        if locale is not None and (
            len(locale) > 16 or not locale.replace("-", "").replace("_", "").isalnum()
        ):
            raise InvalidRequest("'locale' must be a language tag like en or fr-FR")
        try:
            number = parse(to, self.settings.default_region)
        except InvalidRequest as exc:
            raise await self._refuse(exc, now, None, ip, ch) from None
        assessment = await self._guard_send(number, ch, ip, now)

        length = self.settings.code_length if code_length is None else code_length
        if not isinstance(length, int) or not 6 <= length <= 10:
            raise InvalidRequest("code length must be between 6 and 10 digits")
        if service_name is not None and not 0 < len(service_name) <= 40:
            raise InvalidRequest("the service name must be 1-40 characters")
        vid = new_verification_id()
        code = generate_code(length)
        key_id, tag = self.keyring.sign(vid, number.e164, ch.value, code)
        v = Verification(
            id=vid,
            to=number.e164,
            channel=ch,
            status=Status.PENDING,
            key_id=key_id,
            code_hash=tag,
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.code_ttl,
            resend_available_at=now + limits.resend_cooldown(self.settings, 1),
            client_ip=ip,
            country=number.region,
            locale=pick_locale(locale, number.region),
            code_length=length,
            service_name=service_name,
        )
        await self.store.create_verification(v)
        started = self._event(EventType.STARTED, now, number=number, v=v, client_ip=ip)
        await self._deliver(v, number, code, ip, now, EventType.SENT, assessment, started)
        return v

    async def _guard_send(
        self, number: PhoneNumber, ch: Channel, ip: str, now: float
    ) -> Assessment | None:
        """Every refusal that must happen before a message is sent. On success the
        send is counted (limits, budgets and fraud counters in one atomic hit) and
        the fraud assessment is returned for the conversion watch after delivery."""
        decision = self.policy.decide(number, ch)
        if not decision.allowed:
            assert decision.reason is not None
            raise await self._refuse(DestinationRefused(decision.reason), now, number, ip, ch)
        self._development_guard(number, ip, ch)
        watched = not self.policy.is_allowlisted(number)
        undeliverable = f"undeliverable:{number.e164}"
        keys = [undeliverable, *(self.fraud.flag_keys(number) if watched else [])]
        flags = await self.store.get_flags(keys, now)
        if undeliverable in flags:
            flag = flags[undeliverable]
            exc = DestinationRefused(
                "undeliverable", f"destination refused: recently undeliverable ({flag})"
            )
            raise await self._refuse(exc, now, number, ip, ch, provider_reason=flag)
        rules = limits.send_rules(self.settings, number, ip)
        assessment = None
        if watched:
            assessment = await self.fraud.assess(number, ip, now, flags)
            shadows = []
            for verdict in assessment.verdicts:
                if self.fraud.shadowed(verdict.rule):
                    shadows.append(
                        self._event(
                            EventType.FRAUD_SHADOW,
                            now,
                            number=number,
                            client_ip=ip,
                            reason=verdict.reason,
                            rule=verdict.rule,
                            channel=ch.value,
                            details={"subject": verdict.subject, **verdict.figures},
                        )
                    )
                    continue
                if shadows:
                    await self._emit(*shadows)
                raise await self._refuse_fraud(verdict, now, number, ip, ch)
            if shadows:
                await self._emit(*shadows)
            if not self.fraud.shadowed("budget_exhausted"):
                rules += self.fraud.budget_rules(number)  # enforced in the same atomic step
            rules += assessment.record  # fraud counters: never refuse, recorded with the send
        decision_rl = await self.store.hit(rules, now)
        if not decision_rl.allowed:
            assert decision_rl.rule is not None
            if decision_rl.rule.startswith("budget_"):
                verdict = self.fraud.budget_verdict(
                    number, decision_rl.rule, decision_rl.count, decision_rl.retry_after
                )
                raise await self._refuse_fraud(verdict, now, number, ip, ch)
            exc_rl = RateLimited(decision_rl.rule, decision_rl.retry_after)
            raise await self._refuse(exc_rl, now, number, ip, ch, count=decision_rl.count)
        return assessment

    def _development_guard(self, number: PhoneNumber, ip: str, ch: Channel) -> None:
        """Development with live credentials may only reach magic or listed numbers."""
        if self.settings.production or not self.transport.reaches_real_phones:
            return
        if number.is_twilio_magic or number.e164 in self._dev_allowed:
            return
        raise DestinationRefused(
            "development_guard",
            "destination refused: development mode with live Twilio credentials only sends to "
            "Twilio's magic numbers or to numbers listed in OTPGUARD_DEV_ALLOWED_NUMBERS",
        )

    async def _deliver(
        self,
        v: Verification,
        number: PhoneNumber,
        code: str,
        ip: str,
        now: float,
        kind: EventType,
        assessment: Assessment | None,
        *before: Event,
    ) -> None:
        """Send, then record the outcome together with ``before`` (one store write)."""
        msg = Message(
            verification_id=v.id,
            to=v.to,
            channel=v.channel,
            code=code,
            service_name=v.service_name or self.settings.service_name,
            ttl_seconds=max(1, int(v.expires_at - now)),
            locale=v.locale or "en",
            country=v.country,
        )
        try:
            receipt = await self.transport.send(msg)
        except DeliveryError as exc:
            await self.store.transition(v.id, [Status.PENDING], Status.FAILED, now)
            if exc.reason in UNDELIVERABLE_REASONS and self.settings.undeliverable_ttl > 0:
                await self.store.set_flag(
                    f"undeliverable:{v.to}", exc.reason, now + self.settings.undeliverable_ttl
                )
            await self._emit(
                *before,
                self._event(
                    EventType.DELIVERY_FAILED,
                    now,
                    number=number,
                    v=v,
                    client_ip=ip,
                    reason=exc.reason,
                    provider_code=exc.provider_code,
                ),
            )
            raise
        verdicts = []
        if assessment is not None:
            verdicts = await self.fraud.after_send(number, assessment, now)
        events = [
            *before,
            self._event(
                kind,
                now,
                number=number,
                v=v,
                client_ip=ip,
                details={"provider": receipt.provider, "provider_id": receipt.provider_id},
            ),
        ]
        for verdict in verdicts:
            type_ = (
                EventType.FRAUD_SHADOW
                if self.fraud.shadowed(verdict.rule)
                else EventType.FRAUD_SUSPENDED
            )
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
        await self._emit(*events)

    async def resend(self, verification_id: str, client_ip: str | None = None) -> Verification:
        """A fresh code through the same channel; the previous one stops working."""
        now = self.clock()
        v = await self._load(verification_id, now)
        ip = limits.normalize_ip(client_ip) if client_ip else (v.client_ip or limits.UNKNOWN_IP)
        number = parse(v.to, self.settings.default_region)
        if v.status is not Status.PENDING:
            raise Conflict(v.status.value)
        if now < v.resend_available_at:
            raise await self._refuse(
                RateLimited("cooldown", v.resend_available_at - now), now, number, ip, v.channel
            )
        assessment = await self._guard_send(number, v.channel, ip, now)
        code = generate_code(v.code_length)
        while self.keyring.verify(v.key_id, v.code_hash, v.id, v.to, v.channel.value, code):
            code = generate_code(v.code_length)  # never the same code twice in a row
        key_id, tag = self.keyring.sign(v.id, v.to, v.channel.value, code)
        updated = await self.store.replace_code(
            v.id,
            key_id,
            tag,
            now,
            now + self.settings.code_ttl,
            now + limits.resend_cooldown(self.settings, v.sends + 1),
        )
        if updated is None:  # lost a race with another resend, a check or a cancel
            current = await self._load(verification_id, now)
            if current.status is not Status.PENDING:
                raise Conflict(current.status.value)
            raise RateLimited("cooldown", max(1.0, current.resend_available_at - now))
        await self._deliver(updated, number, code, ip, now, EventType.RESENT, assessment)
        return updated

    # -- checking -----------------------------------------------------------------

    async def check(
        self,
        code: str,
        *,
        verification_id: str | None = None,
        to: str | None = None,
        client_ip: str | None = None,
    ) -> CheckResult:
        """Approve exactly once: pending, unexpired, and the code matches.

        A failing check (wrong code, unknown id or number, locked, expired, limited)
        returns no sooner than ``failed_check_floor`` seconds after it began, so its
        timing does not tell which failure it was (measured by bench/timing.py)."""
        started = time.monotonic()
        try:
            result = await self._check(
                code, verification_id=verification_id, to=to, client_ip=client_ip
            )
        except (NotFound, InvalidRequest, RateLimited):
            await self._pad(started)
            raise
        if not result.valid:
            await self._pad(started)
        return result

    async def _pad(self, started: float) -> None:
        floor = self.settings.failed_check_floor
        if floor <= 0:
            return
        # The event loop's timers have millisecond granularity (the selector rounds a
        # timeout up to whole ms), so the wake-up overshoots by the timeout's fraction
        # of a millisecond. Aiming at a whole-millisecond deadline makes that overshoot
        # depend only on when the sleep starts, not on how long the check worked.
        deadline = math.ceil((started + floor) * 1000) / 1000
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def _check(
        self,
        code: str,
        *,
        verification_id: str | None = None,
        to: str | None = None,
        client_ip: str | None = None,
    ) -> CheckResult:
        now = self.clock()
        ip = limits.normalize_ip(client_ip)
        if (verification_id is None) == (to is None):
            raise InvalidRequest("give exactly one of 'id' or 'to'")
        if not isinstance(code, str) or not any(is_well_formed(code, n) for n in range(6, 11)):
            raise InvalidRequest(
                f"'code' must be exactly {self.settings.code_length} ASCII digits (0-9)"
            )
        if verification_id is not None:
            v = await self.store.get_verification(verification_id)
        else:
            assert to is not None
            v = await self.store.find_pending(parse(to, self.settings.default_region).e164, now)
        if v is None:
            # Cost one HMAC like a real comparison so an unknown id is not faster to probe.
            self.keyring.verify("", "", "", "", "", code)
            raise NotFound("no pending verification for that id or number")
        if not is_well_formed(code, v.code_length):
            raise InvalidRequest(f"'code' must be exactly {v.code_length} ASCII digits (0-9)")

        rules = limits.failed_check_rules(self.settings, v.to, ip)
        peek = await self.store.hit(rules, now, record=False)
        if not peek.allowed:
            assert peek.rule is not None
            number = parse(v.to, self.settings.default_region)
            raise await self._refuse(
                RateLimited(peek.rule, peek.retry_after), now, number, ip, v.channel
            )

        ticket = await self.store.record_attempt(v.id, self.settings.max_attempts, now)
        if ticket is None:
            raise NotFound("no pending verification for that id or number")
        v = ticket.verification
        if ticket.outcome is AttemptOutcome.EXPIRED:
            await self._emit(self._event(EventType.EXPIRED, now, v=v, client_ip=ip))
        if ticket.outcome is not AttemptOutcome.COUNTED:
            self.keyring.verify(v.key_id, v.code_hash, v.id, v.to, v.channel.value, code)
            # LOCKED leaves a pending status as it is: the checks still in flight decide.
            return CheckResult(False, v.status, 0, v)

        matches = self.keyring.verify(v.key_id, v.code_hash, v.id, v.to, v.channel.value, code)
        if matches and await self.store.approve(v.id, now):
            v = v.with_(status=Status.APPROVED, updated_at=now)
            await self._emit(self._event(EventType.CHECK_PASSED, now, v=v, client_ip=ip))
            # Conversion counts only need the prefix and the region: no second parse.
            number = PhoneNumber(e164=v.to, region=v.country, type="")
            if v.country is not None and not self.policy.is_allowlisted(number):
                await self.fraud.record_approval(number, now)
            return CheckResult(True, Status.APPROVED, self._remaining(v), v)
        if matches:  # right code, but someone else approved (or it expired) in between
            current = await self.store.get_verification(v.id) or v
            return CheckResult(False, current.status, self._remaining(current), current)

        await self.store.hit(rules, now)
        events = [
            self._event(
                EventType.CHECK_FAILED, now, v=v, client_ip=ip, details={"attempts": v.attempts}
            )
        ]
        if v.attempts >= self.settings.max_attempts and await self.store.lock_if_exhausted(
            v.id, self.settings.max_attempts, now
        ):
            v = v.with_(status=Status.MAX_ATTEMPTS_REACHED, updated_at=now)
            events.append(self._event(EventType.LOCKED, now, v=v, client_ip=ip))
        await self._emit(*events)
        current = await self.store.get_verification(v.id) or v
        return CheckResult(False, current.status, self._remaining(current), current)

    def _remaining(self, v: Verification) -> int:
        if v.status is not Status.PENDING:
            return 0
        return max(0, self.settings.max_attempts - v.attempts)

    # -- the rest -------------------------------------------------------------------

    async def _load(self, verification_id: str, now: float) -> Verification:
        """Fetch, marking an overdue pending verification expired."""
        if not isinstance(verification_id, str) or len(verification_id) > 64:
            raise NotFound("no verification with that id")
        v = await self.store.get_verification(verification_id)
        if v is None:
            raise NotFound("no verification with that id")
        if v.status is Status.PENDING and now >= v.expires_at:
            moved = await self.store.transition(v.id, [Status.PENDING], Status.EXPIRED, now)
            if moved is not None:
                await self._emit(self._event(EventType.EXPIRED, now, v=moved))
                return moved
            v = await self.store.get_verification(verification_id) or v
        return v

    async def get(self, verification_id: str) -> Verification:
        return await self._load(verification_id, self.clock())

    def attempts_remaining(self, v: Verification) -> int:
        return self._remaining(v)

    async def cancel(self, verification_id: str) -> Verification:
        now = self.clock()
        v = await self._load(verification_id, now)
        if v.status is Status.CANCELED:
            return v
        moved = await self.store.transition(v.id, [Status.PENDING], Status.CANCELED, now)
        if moved is None:
            current = await self._load(verification_id, now)
            if current.status is Status.CANCELED:
                return current
            raise Conflict(current.status.value)
        await self._emit(self._event(EventType.CANCELED, now, v=moved))
        return moved

    async def record_delivery_status(
        self,
        verification_id: str | None,
        status: str,
        error_code: int | None = None,
        provider_id: str | None = None,
    ) -> None:
        """A provider's delivery report (Twilio status callback) becomes an event."""
        now = self.clock()
        v = await self.store.get_verification(verification_id) if verification_id else None
        status = (status or "unknown")[:32]
        if error_code is not None and v is not None and self.settings.undeliverable_ttl > 0:
            from .transports.errors import reason_for_provider_code

            reason = reason_for_provider_code(error_code)
            if reason in UNDELIVERABLE_REASONS:
                await self.store.set_flag(
                    f"undeliverable:{v.to}", reason, now + self.settings.undeliverable_ttl
                )
        await self._emit(
            self._event(
                EventType.DELIVERY_STATUS,
                now,
                v=v,
                reason=status,
                provider_code=error_code,
                details={"provider_id": (provider_id or "")[:64]},
            )
        )

    async def explain_number(self, raw: str) -> dict[str, object]:
        return self.policy.explain(parse(raw, self.settings.default_region))

    async def purge(self, *, scheduled: bool = False) -> int:
        """Delete what is stale. ``scheduled``: the maintenance job's lighter pass, which
        leaves to a backend what it expires by itself (Redis TTLs)."""
        now = self.clock()
        op = self.store.scheduled_purge if scheduled else self.store.purge
        return await op(
            now,
            verification_grace=VERIFICATION_GRACE,
            rate_horizon=self._rate_horizon,
            event_horizon=self.settings.event_retention_days * 86400.0,
        )

    async def run_maintenance(self, stop: asyncio.Event) -> None:
        """Purge on a schedule until ``stop`` is set; store errors are logged, not fatal."""
        while not stop.is_set():
            try:
                removed = await self.purge(scheduled=True)
                if removed:
                    log.debug("purged %d stale rows", removed)
            except StorageError:
                log.warning("purge failed: store unavailable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.purge_interval)


def open_verifier(settings: Settings, *, clock: Clock = system_clock) -> Verifier:
    """A Verifier built from settings alone (store by URL, transport by name), validated
    as ``otpguard serve`` would. Use it as ``async with open_verifier(settings) as otp:``."""
    from .startup import check_startup
    from .stores import store_from_url
    from .transports import transport_from_settings

    settings = check_startup(settings)
    return Verifier(
        settings,
        store_from_url(settings.store_url),
        transport_from_settings(settings),
        clock=clock,
    )
