"""The engine: start / resend / check / cancel / get.

The only place where policy meets storage and delivery. The HTTP API, the CLI
and embedded users are thin shells over :class:`Verifier`.

Order of a send, each refusal before any message leaves::

    parse number -> destination policy -> development guard -> undeliverable memory
    -> fraud rules -> rate limits (atomic, all or nothing) -> store -> transport

The email channel runs the same path with an address for the number
(``destinations.py``: parsed by ``email_address.py``, judged by ``email_policy.py``,
the MX check first when it is on) and its own transport (``email_transport``).

Order of a check::

    well-formed code -> find verification -> reserve a wrong code under the
    failed-check caps (atomic, all or nothing) -> count the attempt (atomic, before
    comparing) -> compare (constant time) -> approve (atomic, exactly once, only the
    tag compared) and give the reservation back | keep it, lock at the cap

By number, one wrong code is reserved before anything is looked up, then the
number's newest pending verifications of the same API key are tried in turn
(``PENDING_PER_CHECK``), each after a reservation of its own; every failure is
the same ``NotFound``. A verification belongs to the key that started it: with
``owner``, another key's is not found.

If the store cannot answer, nothing is sent and nothing is approved
(``StorageError``, HTTP 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import limits, numberlists, refusals, tags
from .challenge import ChallengeVerifier, token_fingerprint
from .clock import Clock, system_clock
from .codes import Keyring, generate_code, is_well_formed
from .config import Settings
from .destinations import Destination, destination_of, is_email, parse_destination
from .email_address import EmailAddress
from .email_policy import EmailPolicy, MxResolver
from .email_policy import dev_allowed as dev_allowed_emails
from .errors import (
    ChallengeRequired,
    ChallengeUnavailable,
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
from .events import Event, EventOutbox, EventType, log_event, mask_number, new_event_id
from .fraud import ConversionWatch
from .guards import (
    AdmissionGuard,
    BudgetGuard,
    DestinationGuard,
    DevelopmentGuard,
    Guard,
    LimitGuard,
    Refusal,
    SendContext,
    SequentialGuard,
    Shadow,
    SuspensionGuard,
    UndeliverableGuard,
    scope_buckets,
    undeliverable_key,
)
from .listedit import ListEditor
from .models import AttemptOutcome, Channel, RateRule, Status, Verification
from .phone import DestinationPolicy, PhoneNumber, parse
from .purpose import TRANSACTION, Binding, bind
from .stores.base import EventQuery, Store
from .transports.base import Message, Transport, pick_locale

log = logging.getLogger("otpguard.service")

# Reasons after which a number is remembered as undeliverable for a while.
UNDELIVERABLE_REASONS = frozenset(
    {"invalid_number", "not_sms_capable", "unroutable", "unsubscribed", "country_not_permitted",
     "invalid_address"}
)  # fmt: skip
#: Delivery report statuses that say the message will never arrive.
UNDELIVERED_STATUSES = frozenset({"failed", "undelivered", "canceled"})
VERIFICATION_GRACE = 3600.0  # keep finished verifications this long after expiry
# A provider's delivery report counts only this long after the send it reports on
# (and only while its verification is kept); each (message, status) counts once.
DELIVERY_REPORT_WINDOW = 2 * 3600


class DeliveryReport(enum.Enum):
    """What ``record_delivery_status`` did with a report."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # the same message and status already counted: a replay
    UNKNOWN_MESSAGE = "unknown_message"  # no send of this verification had that id
    TOO_LATE = "too_late"  # the send is older than DELIVERY_REPORT_WINDOW


EventListener = Callable[[Event], None]
#: Narrows a check by number's candidates (the /v2 API: to one service's).
Selector = Callable[[list[Verification]], Awaitable[list[Verification]]]
PENDING_PER_CHECK = 5  # a check by number tries at most this many pending verifications
NO_MATCH = "no pending verification for that number matched the code"
CHALLENGE_TOKEN_WINDOW = 3600  # seconds a used challenge token is remembered
REUSED_RULE = "challenge_reused"  # the rule that admits each challenge token once


def _ip_or_none(ip: str) -> str | None:
    return None if ip == limits.UNKNOWN_IP else ip


def build_guards(
    settings: Settings,
    policy: DestinationPolicy,
    dev_allowed: frozenset[str],
    admission: AdmissionGuard,
    email: EmailPolicy | None = None,
) -> list[Guard]:
    """The send path's guards, in order; those named in OTPGUARD_FRAUD_SHADOW wrapped."""
    email = email or EmailPolicy.from_section(settings.email)
    guards: list[Guard] = [
        DestinationGuard(policy, email),
        DevelopmentGuard(settings.production, dev_allowed, dev_allowed_emails(settings.email)),
        UndeliverableGuard(),
    ]
    fraud: list[Guard] = [SequentialGuard(settings.fraud), BudgetGuard(settings.fraud)]
    if settings.fraud_suspend_on_low_conversion:
        fraud.insert(0, SuspensionGuard())
    guards += [LimitGuard(settings.limits)]
    guards += [Shadow(g) if g.name in settings.fraud_shadow else g for g in fraud]
    guards.append(admission)
    return guards


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
        challenge: ChallengeVerifier | None = None,
        email_transport: Transport | None = None,
        mx_resolver: MxResolver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        # The email channel's transport: the one given, else the phone transport when
        # it carries any channel (memory, console, file); None: email is not offered.
        if email_transport is None and transport.channels is None:
            email_transport = transport
        self.email_transport = email_transport
        self.clock = clock
        self.keyring = keyring or settings.keyring()
        self.listeners = list(listeners)
        # The webhook outbox (webhook_delivery.py), when the app installs one: each
        # recorded event is handed to it after the store write that records it.
        self.webhooks: EventOutbox | None = None
        self.policy = DestinationPolicy.from_settings(settings)
        self.watch = ConversionWatch(settings.fraud, store)
        # The CAPTCHA step: the one given, else the settings' (None when it is off).
        self.challenge = challenge or ChallengeVerifier.from_section(settings.challenge)
        try:
            dev_allowed = frozenset(
                parse(n, settings.default_region).e164 for n in settings.dev_allowed_numbers
            )
        except InvalidRequest as exc:
            raise ConfigError(f"OTPGUARD_DEV_ALLOWED_NUMBERS: {exc.message}") from None
        self.admission = AdmissionGuard(
            settings.admission, challenge_configured=self.challenge is not None
        )
        self.email_policy = EmailPolicy.from_section(settings.email, mx_resolver)
        self.guards = build_guards(
            settings, self.policy, dev_allowed, self.admission, self.email_policy
        )
        # The run-time block and allow lists (``otpguard numbers``, /v1/admin/numbers).
        self.lists = ListEditor(
            settings, store, self.keyring, self.policy, emit=self.emit, clock=lambda: self.clock()
        )
        # Rate entries live at least as long as the delivery reports' once-only rule.
        self._rate_horizon = float(max(limits.longest_window(settings), DELIVERY_REPORT_WINDOW))

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()

    async def aclose(self) -> None:
        try:
            await self.transport.aclose()
            if self.email_transport not in (None, self.transport):
                await self.email_transport.aclose()
        finally:
            try:
                if self.challenge is not None:
                    await self.challenge.aclose()
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
        number: Destination | str | None = None,
        v: Verification | None = None,
        **fields: Any,
    ) -> Event:
        e164 = number.e164 if isinstance(number, PhoneNumber | EmailAddress) else number
        country = number.region if isinstance(number, PhoneNumber | EmailAddress) else None
        if v is not None:
            e164 = e164 or v.to
            country = country or v.country
            fields.setdefault("verification_id", v.id)
            fields.setdefault("channel", v.channel.value)
            fields.setdefault("owner", v.owner)
        return Event(
            type=type_.value,
            ts=now,
            id=new_event_id(now),
            number_masked=mask_number(e164) if e164 else None,
            number_hash=self.keyring.keyed_hash("number", e164) if e164 else None,
            country=fields.pop("country", country),
            **fields,
        )

    async def emit(self, *events: Event) -> None:
        """Record events: stored, logged (``log_events``), handed to the listeners and
        to the webhook outbox. The engine's own decisions come through here; so do the
        decisions of the jobs around it (alerts, list edits)."""
        await self.store.add_events(events)
        if self.webhooks is not None:
            await self.webhooks.enqueue(events)
        for event in events:
            if self.settings.log_events:
                log_event(event)
            self._notify(event)

    def _notify(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a monitoring bug must never break verification
                log.exception("event listener failed")

    async def _emit_refusal(self, event: Event) -> None:
        """A refusal is counted in its minute's tally; only the first of its kind in
        the minute is stored and logged as an event (``refusals.py``). Every one
        reaches the listeners (metrics count each)."""
        try:
            n = await self.store.tally_refusal(
                refusals.minute_of(event.ts), refusals.kind_of(event), refusals.example_of(event)
            )
            if n == 1:
                await self.store.add_events([event])
                if self.webhooks is not None:  # the first of its kind in the minute only
                    await self.webhooks.enqueue([event])
        finally:
            self._notify(event)  # counted by the metrics even when the store failed
        if self.settings.log_events:
            if n == 1:
                log_event(event)
            else:
                refusals.log_summary(event, n)

    async def _refuse(
        self,
        exc: OtpguardError,
        now: float,
        number: Destination | None,
        client_ip: str,
        channel: Channel | None,
        rule: str | None = None,
        owner: str | None = None,
        **details: Any,
    ) -> OtpguardError:
        """Record a refusal as an event and return the exception to raise. ``owner``:
        the API key whose start was refused (its webhook endpoint hears of it)."""
        fields: dict[str, Any] = {
            "reason": getattr(exc, "reason", exc.code),
            "rule": rule,
            "owner": owner,
        }
        if isinstance(exc, RateLimited):
            fields["reason"] = "rate_limited"
            fields["rule"] = exc.rule
            details.setdefault("retry_after", exc.retry_after)
        with contextlib.suppress(StorageError):  # the refusal stands even if the event is lost
            await self._emit_refusal(
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
        owner: str | None = None,
        account_id: str | None = None,
        challenge_token: str | None = None,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> Verification:
        """Create a verification, send its code, return it (never the code).

        ``code_length`` (6-10) and ``service_name`` override the settings for this
        verification (the Twilio Verify-compatible API uses them per service).
        ``owner`` is the API key's id (its own admission bucket); ``account_id`` the
        app's own user or session id (its own limits, stored only as a keyed hash);
        ``challenge_token`` a CAPTCHA token after a ``challenge_required`` answer.
        ``purpose`` (default ``login``), and for ``transaction`` the ``amount`` in
        ``currency`` and the ``payee``, are bound into the code (``purpose.py``): its
        check must name the same. Every argument is validated before anything is
        counted."""
        now = self.clock()
        ip = limits.normalize_ip(client_ip)
        ch = self._offered(channel)
        binding = bind(purpose, amount, currency, payee)
        if binding.purpose == TRANSACTION and ch is Channel.WHATSAPP:
            raise InvalidRequest(
                "a transaction code goes by sms, voice or email: the WhatsApp template "
                "cannot name the amount and the payee"
            )
        if locale is not None and (
            len(locale) > 16
            or not locale.isascii()
            or not locale.replace("-", "").replace("_", "").isalnum()
        ):
            raise InvalidRequest("'locale' must be a language tag like en or fr-FR")
        length = self.settings.code_length if code_length is None else code_length
        if not isinstance(length, int) or isinstance(length, bool) or not 6 <= length <= 10:
            raise InvalidRequest("code length must be between 6 and 10 digits")
        if service_name is not None and not 0 < len(service_name) <= 40:
            raise InvalidRequest("the service name must be 1-40 characters")
        if account_id is not None and (
            not isinstance(account_id, str) or not 0 < len(account_id) <= 128
        ):
            raise InvalidRequest("'account_id' must be 1-128 characters")
        if challenge_token is not None and (
            not isinstance(challenge_token, str) or not 0 < len(challenge_token) <= 4096
        ):
            raise InvalidRequest("'challenge_token' must be 1-4096 characters")
        try:
            number = parse_destination(to, ch, self.settings.default_region)
        except InvalidRequest as exc:
            raise await self._refuse(exc, now, None, ip, ch, owner=owner) from None
        await self._check_mx(number, ch, ip, now)
        ctx = self._context(number, ch, ip, now, owner, account_id)
        await self._admit(ctx, challenge_token)

        vid = new_verification_id()
        code = generate_code(length)
        key_id, tag = self.keyring.sign(vid, number.e164, ch.value, code, binding.tag_parts())
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
            resend_available_at=now + limits.resend_cooldown(self.settings.limits, 1),
            client_ip=ip,
            country=number.region,
            locale=pick_locale(locale, number.region),
            code_length=length,
            service_name=service_name,
            owner=owner,
            purpose=binding.purpose,
            amount=binding.amount,
            currency=binding.currency,
            payee=binding.payee,
        )
        await self.store.create_verification(v)
        # The purpose, when not login; never the amount or payee (events are kept long).
        details = {} if binding.is_default else {"purpose": binding.purpose}
        started = self._event(
            EventType.STARTED, now, number=number, v=v, client_ip=ip, details=details
        )
        return await self._deliver(
            v, number, code, ip, now, EventType.SENT, started, allowlisted=ctx.allowlisted
        )

    def _offered(self, channel: str | Channel) -> Channel:
        ch = _channel(channel)
        if ch is Channel.EMAIL and self.email_transport is None:
            raise InvalidRequest(
                "the email channel is not configured on this server (OTPGUARD_EMAIL_TRANSPORT)"
            )
        return ch

    async def _check_mx(self, number: Destination, ch: Channel, ip: str, now: float) -> None:
        """An address's MX check (``OTPGUARD_EMAIL_REQUIRE_MX``), before anything is counted."""
        if not is_email(number):
            return
        mx = await self.email_policy.decide_mx(number, now)
        if not mx.allowed:
            raise await self._refuse(DestinationRefused(mx.reason or "no_mx"), now, number, ip, ch)

    def _context(
        self,
        number: Destination,
        ch: Channel,
        ip: str,
        now: float,
        owner: str | None = None,
        account_id: str | None = None,
    ) -> SendContext:
        account = None
        if account_id is not None:
            account = self.keyring.keyed_hash("account", f"{owner or ''}:{account_id}")
        return SendContext(
            number=number,
            channel=ch,
            ip=ip,
            now=now,
            owner=owner,
            account=account,
            trusted_key=self._trusted_key(number.e164),
            reaches_real_phones=self._transport_for(ch).reaches_real_phones,
        )

    def _transport_for(self, channel: Channel) -> Transport:
        if channel is Channel.EMAIL:
            assert self.email_transport is not None  # start refuses email without one
            return self.email_transport
        return self.transport

    def _allowlisted(self, number: Destination) -> bool:
        """OTPGUARD_ALLOWLIST (numbers that skip the fraud rules); never an address."""
        return isinstance(number, PhoneNumber) and self.policy.is_allowlisted(number)

    def _trusted_key(self, e164: str) -> str:
        return "trusted:" + self.keyring.keyed_hash("number", e164)

    async def _admit(
        self, ctx: SendContext, challenge_token: str | None, *, starting: bool = True
    ) -> None:
        """Run the guards: every refusal happens before a message is sent. On success
        the send is counted (limits, admission buckets, counters) in one atomic step.
        A resend (``starting=False``) is never challenged: it cannot carry a token, and
        its verification was admitted already."""
        number, ip, now = ctx.number, ctx.ip, ctx.now
        # One flag read for every guard (the run-time allow entries are among them).
        keys = list(dict.fromkeys(k for g in self.guards for k in g.flag_keys(ctx)))
        ctx.flags = await self.store.get_flags(keys, now) if keys else {}
        allowlisted = self._allowlisted(number) or (
            not is_email(number) and numberlists.allowed_by(ctx.flags, number.e164) is not None
        )
        ctx.allowlisted = allowlisted
        # The allowlist skips the fraud guards and admission, never policy or limits.
        guards = [g for g in self.guards if not (allowlisted and g.fraud)]
        for guard in guards:
            refusal = guard.check(ctx)
            if refusal is not None:
                raise await self._refuse_with(refusal, ctx)
        await self._emit_shadows(ctx)
        rules = [r for g in guards for r in g.rules(ctx)]
        rules += self.watch.send_rules(number)
        buckets = [] if allowlisted else [b for g in guards for b in g.buckets(ctx)]
        pressure: float | None = None
        challenge = self.challenge
        if challenge is not None and buckets and starting:
            if challenge_token is not None:
                try:
                    ctx.challenge_passed = await challenge.verify(challenge_token, _ip_or_none(ip))
                except ChallengeUnavailable as unavailable:
                    raise await self._refuse_with(Refusal(unavailable), ctx) from None
                if not ctx.challenge_passed:
                    raise await self._refuse_with(self._challenge("challenge_failed"), ctx)
                # Each token admits one start, counted in the same atomic step.
                key = f"challenge:{token_fingerprint(challenge_token)}"
                rules.append(RateRule(REUSED_RULE, key, 1, CHALLENGE_TOKEN_WINDOW))
            elif challenge.mode == "always":
                raise await self._refuse_with(self._challenge("challenge_required"), ctx)
            else:
                pressure = self.settings.admission_pressure
        decision = await self.store.admit(
            rules, buckets, now, pressure=pressure, force=ctx.challenge_passed
        )
        if decision.allowed:
            return
        owner = next((g for g in guards if g.owns(decision.key or "")), None)
        if decision.rule == REUSED_RULE:
            refusal = self._challenge(
                "challenge_failed", "that challenge token was used already: show it again"
            )
        elif owner is not None:
            refusal = owner.refusal(ctx, decision)
        else:
            assert decision.rule is not None
            refusal = Refusal(RateLimited(decision.rule, decision.retry_after), decision.rule)
        if isinstance(refusal.error, ChallengeRequired) and challenge is not None:
            refusal.error.challenge = challenge.describe()
        raise await self._refuse_with(refusal, ctx)

    def _challenge(self, reason: str, message: str = "") -> Refusal:
        assert self.challenge is not None
        return Refusal(ChallengeRequired(self.challenge.describe(), reason=reason, message=message))

    async def _refuse_with(self, refusal: Refusal, ctx: SendContext) -> OtpguardError:
        return await self._refuse(
            refusal.error,
            ctx.now,
            ctx.number,
            ctx.ip,
            ctx.channel,
            rule=refusal.rule,
            owner=ctx.owner,
            **refusal.details,
        )

    async def _emit_shadows(self, ctx: SendContext) -> None:
        """What shadowed guards would have refused, as ``fraud.shadow`` events."""
        events = []
        for guard in self.guards:
            if isinstance(guard, Shadow):
                for refusal in guard.would_refuse:
                    events.append(self._shadow_event(ctx, refusal.reason, refusal.rule,
                                                     refusal.details))  # fmt: skip
                guard.would_refuse.clear()
        shadowed = [g.inner for g in self.guards if isinstance(g, Shadow)]
        peek_rules = [r for g in shadowed for r in g.rules(ctx)]
        if peek_rules:
            peek = await self.store.hit(peek_rules, ctx.now, record=False)
            if not peek.allowed:
                owner = next(g for g in shadowed if g.owns(peek.key or ""))
                refusal = owner.refusal(ctx, peek)
                events.append(self._shadow_event(ctx, refusal.reason, refusal.rule,
                                                 refusal.details))  # fmt: skip
        if events:
            await self.emit(*events)

    def _shadow_event(
        self, ctx: SendContext, reason: str, rule: str | None, details: dict[str, Any]
    ) -> Event:
        return self._event(
            EventType.FRAUD_SHADOW,
            ctx.now,
            number=ctx.number,
            client_ip=ctx.ip,
            reason=reason,
            rule=rule,
            channel=ctx.channel.value,
            details=details,
        )

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
        """Send, then record the outcome together with ``before`` (one store write).

        Returns ``v`` with ``delivery`` set: ``sent``, or ``unknown`` when the
        provider may have sent it but its answer was lost (a timeout after the
        request was written): the verification stays pending, its code usable, and
        the status callback settles it. Once a message may have left, nothing that
        fails afterwards turns the answer into an error."""
        msg = Message(
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
        transport = self._transport_for(v.channel)
        try:
            receipt = await transport.send(msg)
        except DeliveryError as exc:
            if exc.outcome_unknown:
                details: dict[str, Any] = {"provider": transport.name, "outcome": "unknown"}
                await self._sent(
                    v, number, ip, now, kind, details, "outcome_unknown", before, allowlisted
                )
                return v.with_(delivery="unknown")
            await self.store.transition(v.id, [Status.PENDING], Status.FAILED, now)
            if exc.reason in UNDELIVERABLE_REASONS and self.settings.undeliverable_ttl > 0:
                await self.store.set_flag(
                    undeliverable_key(v.to), exc.reason, now + self.settings.undeliverable_ttl
                )
            await self.emit(
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
        details = {"provider": receipt.provider, "provider_id": receipt.provider_id}
        await self._sent(v, number, ip, now, kind, details, None, before, allowlisted)
        return v.with_(delivery="sent")

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
    ) -> None:
        """The bookkeeping after a message left (or may have): the events and the
        conversion watch. A store failure here is logged, never answered: the
        message is out, and a 503 would say it was not."""
        try:
            verdicts = []
            if not allowlisted:
                verdicts = await self.watch.after_send(number, now)
            events = [
                *before,
                self._event(kind, now, number=number, v=v, client_ip=ip, reason=reason,
                            details=details),
            ]  # fmt: skip
            for verdict in verdicts:
                type_ = EventType.FRAUD_SHADOW if self.watch.shadowed else EventType.FRAUD_SUSPENDED
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
            await self.emit(*events)
        except StorageError:
            log.warning("message for %s handed to the provider; its events were lost", v.id)

    async def resend(
        self,
        verification_id: str,
        client_ip: str | None = None,
        *,
        owner: str | None = None,
        keep_earlier: bool = False,
    ) -> Verification:
        """A fresh code through the same channel; the previous one stops working.
        ``owner``: the API key asking; another key's verification is not found.
        ``keep_earlier``: the codes sent before stay valid too, and the verification
        keeps its expiry, so no code outlives ``code_ttl`` after the first send
        (Twilio's resend, for /v2; at most ``tags.MAX_TAGS`` sends)."""
        now = self.clock()
        v = await self._load(verification_id, now, owner)
        ip = limits.normalize_ip(client_ip) if client_ip else (v.client_ip or limits.UNKNOWN_IP)
        number = parse_destination(v.to, v.channel, self.settings.default_region)
        if v.status is not Status.PENDING:
            raise Conflict(v.status.value)
        if now < v.resend_available_at or (keep_earlier and v.sends >= tags.MAX_TAGS):
            rule, wait = ("cooldown", v.resend_available_at - now)
            if now >= v.resend_available_at:
                rule, wait = ("max_sends", v.expires_at - now)
            raise await self._refuse(RateLimited(rule, wait), now, number, ip, v.channel)
        ctx = self._context(number, v.channel, ip, now, v.owner)
        await self._admit(ctx, None, starting=False)
        code = generate_code(v.code_length)
        bound = v.binding.tag_parts()  # the new code is for what the first one was for
        while tags.matches(self.keyring, v, code, bound):
            code = generate_code(v.code_length)  # never a code it already has
        key_id, tag = self.keyring.sign(v.id, v.to, v.channel.value, code, bound)
        expires_at = now + self.settings.code_ttl
        if keep_earlier:
            (key_id, tag), expires_at = tags.appended(v, key_id, tag), v.expires_at
        updated = await self.store.replace_code(
            v.id,
            key_id,
            tag,
            now,
            expires_at,
            now + limits.resend_cooldown(self.settings.limits, v.sends + 1),
        )
        if updated is None:  # lost a race with another resend, a check or a cancel
            current = await self._load(verification_id, now)
            if current.status is not Status.PENDING:
                raise Conflict(current.status.value)
            raise RateLimited("cooldown", max(1.0, current.resend_available_at - now))
        return await self._deliver(
            updated, number, code, ip, now, EventType.RESENT, allowlisted=ctx.allowlisted
        )

    # -- checking -----------------------------------------------------------------

    async def check(
        self,
        code: str,
        *,
        verification_id: str | None = None,
        to: str | None = None,
        client_ip: str | None = None,
        started: float | None = None,
        owner: str | None = None,
        select: Selector | None = None,
        per_ip: bool = True,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> CheckResult:
        """Approve exactly once: pending, unexpired, and the code matches.

        ``owner`` is the API key asking (None: any, for embedded use and admin keys):
        another key's verification is not found (one made without a key, in-process,
        is anyone's). By ``to``, the number's newest
        ``PENDING_PER_CHECK`` pending verifications of that owner are tried, newest
        first (``select`` may narrow them, e.g. to one /v2 service); every failure by
        number (no pending code, wrong code or length, locked, expired) is the same
        ``NotFound`` and counts as a wrong code, so it tells nothing about the number.
        ``per_ip=False``: a caller with no end user's IP (the /v2 API by number): only
        the per-number cap applies, not the shared ``unknown`` IP bucket.
        ``purpose``, ``amount``, ``currency`` and ``payee`` must be what the start
        named (omitted: ``login``); anything else is a wrong code, counted as one.

        A failing check (wrong code, unknown id or number, locked, expired, limited)
        returns no sooner than ``failed_check_floor`` seconds after it began, so its
        timing does not tell which failure it was (measured by bench/timing.py).
        ``started`` (a ``time.monotonic()`` reading) is when it began for a caller
        that did work of its own first, such as an API route."""
        started = time.monotonic() if started is None else started
        try:
            result = await self._check(
                code,
                verification_id=verification_id,
                to=to,
                client_ip=client_ip,
                owner=owner,
                select=select,
                per_ip=per_ip,
                binding=bind(purpose, amount, currency, payee),
            )
        except (NotFound, InvalidRequest, RateLimited):
            await self.pad_failed_check(started)
            raise
        if not result.valid:
            await self.pad_failed_check(started)
        return result

    async def pad_failed_check(self, started: float) -> None:
        """Sleep until ``failed_check_floor`` seconds after ``started`` (a
        ``time.monotonic()`` reading): the API routes call it for every failing check
        they answer, whatever failed, so that no failure is faster than another."""
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
        owner: str | None = None,
        select: Selector | None = None,
        per_ip: bool = True,
        binding: Binding,
    ) -> CheckResult:
        now = self.clock()
        ip = limits.normalize_ip(client_ip)
        if (verification_id is None) == (to is None):
            raise InvalidRequest("give exactly one of 'id' or 'to'")
        if not isinstance(code, str) or not any(is_well_formed(code, n) for n in range(6, 11)):
            raise InvalidRequest(
                f"'code' must be exactly {self.settings.code_length} ASCII digits (0-9)"
            )
        if to is not None:
            return await self._check_number(code, to, ip, now, owner, select, per_ip, binding)
        assert verification_id is not None
        v = await self.store.get_verification(verification_id)
        if v is not None and owner is not None and v.owner not in (owner, None):
            v = None  # another key's: exactly as if it did not exist
        if v is None:
            # Cost one HMAC like a real comparison so an unknown id is not faster to probe.
            self.keyring.verify("", "", "", "", "", code, binding.tag_parts())
            raise NotFound("no pending verification for that id or number")
        if not is_well_formed(code, v.code_length):
            raise InvalidRequest(f"'code' must be exactly {v.code_length} ASCII digits (0-9)")
        rules = limits.failed_check_rules(self.settings.limits, v.to, ip)
        number = parse_destination(v.to, v.channel, self.settings.default_region)
        await self._reserve(rules, now, number, ip, v.channel)
        result = await self._compare(v, code, binding, ip, now, rules, by_number=False)
        if result is None:
            raise NotFound("no pending verification for that id or number")
        return result

    async def _check_number(
        self,
        code: str,
        to: str,
        ip: str,
        now: float,
        owner: str | None,
        select: Selector | None,
        per_ip: bool,
        binding: Binding,
    ) -> CheckResult:
        """A check by number. One wrong code is reserved before anything is looked up
        (so "no pending code" counts like any failure), one more before each further
        comparison; only an approval gives one back. Every failure answers the same."""
        number = parse_destination(to, None, self.settings.default_region)
        rules = limits.failed_check_rules(self.settings.limits, number.e164, ip if per_ip else None)
        await self._reserve(rules, now, number, ip, None)
        pending = await self.store.list_pending(
            number.e164, now, owner=owner, limit=PENDING_PER_CHECK
        )
        if select is not None:
            pending = await select(pending)
        compared = 0
        for v in pending:
            if not is_well_formed(code, v.code_length):
                continue  # a code of another length is simply not this one
            if compared and not (await self.store.hit(rules, now)).allowed:
                break  # no room for another comparison: a failure like the others
            compared += 1
            result = await self._compare(v, code, binding, ip, now, rules, by_number=True)
            if result is not None and result.valid:
                return result
        if not compared:
            # The cost of a comparison.
            self.keyring.verify("", "", "", "", "", code, binding.tag_parts())
            await self.emit(
                self._event(
                    EventType.CHECK_FAILED, now, number=number, client_ip=ip, reason="no_match"
                )
            )
        raise NotFound(NO_MATCH)

    async def _reserve(
        self,
        rules: Sequence[RateRule],
        now: float,
        number: Destination,
        ip: str,
        channel: Channel | None,
    ) -> None:
        """Count a wrong code before the comparison, in the atomic step that decides
        the caps (a reservation, given back when the code is right): concurrent wrong
        codes can never pass a cap between a peek and a record."""
        reserved = await self.store.hit(rules, now)
        if not reserved.allowed:
            assert reserved.rule is not None
            raise await self._refuse(
                RateLimited(reserved.rule, reserved.retry_after), now, number, ip, channel
            )

    async def _compare(
        self,
        v: Verification,
        code: str,
        binding: Binding,
        ip: str,
        now: float,
        rules: Sequence[RateRule],
        *,
        by_number: bool,
    ) -> CheckResult | None:
        """Count the attempt, compare, approve the tag compared. ``binding`` is what
        the check names: another purpose, amount or payee fails as a wrong code. The
        reservation made for this comparison is given back on an approval; by id also
        when nothing was compared or a right code lost a race (by number every failure
        counts the same). None when the verification is gone."""
        give_back = not by_number
        ticket = await self.store.record_attempt(v.id, self.settings.max_attempts, now)
        if ticket is None:
            if give_back:
                await self._give_back(rules, now)
            return None
        v = ticket.verification
        if ticket.outcome is AttemptOutcome.EXPIRED:
            await self.emit(self._event(EventType.EXPIRED, now, v=v, client_ip=ip))
        bound = binding.tag_parts()
        if ticket.outcome is not AttemptOutcome.COUNTED:
            tags.matches(self.keyring, v, code, bound)  # the cost of a comparison
            if give_back:
                await self._give_back(rules, now)  # nothing was compared: no wrong code
            # LOCKED leaves a pending status as it is: the checks still in flight decide.
            return CheckResult(False, v.status, 0, v)

        matches = tags.matches(self.keyring, v, code, bound)
        if matches and await self._approve(v, now):
            v = v.with_(status=Status.APPROVED, updated_at=now)
            # The approval has committed: whatever fails from here on, the answer is
            # "approved" (the bookkeeping below is logged and lost, never a 503).
            try:
                await self._give_back(rules, now)
                await self.emit(self._event(EventType.CHECK_PASSED, now, v=v, client_ip=ip))
                await self._converted(v, now)
            except StorageError:
                log.warning("approval of %s recorded; its bookkeeping failed", v.id)
            return CheckResult(True, Status.APPROVED, self._remaining(v), v)
        if matches:  # right code, but approved, resent or expired in between
            if give_back:
                await self._give_back(rules, now)  # a right code, no longer the current one
            current = await self.store.get_verification(v.id) or v
            return CheckResult(False, current.status, self._remaining(current), current)

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
        await self.emit(*events)
        current = await self.store.get_verification(v.id) or v
        return CheckResult(False, current.status, self._remaining(current), current)

    async def _approve(self, v: Verification, now: float) -> bool:
        """Approve ``v`` if it still holds the tags the code was compared with; or,
        after a resend that kept them and added one (``keep_earlier``), the new set."""
        if await self.store.approve(v.id, now, code_hash=v.code_hash):
            return True
        current = await self.store.get_verification(v.id)
        if current is None or not current.code_hash.startswith(v.code_hash + tags.SEP):
            return False  # approved, canceled, expired, or a resend replaced the code
        return await self.store.approve(v.id, now, code_hash=current.code_hash)

    async def _give_back(self, rules: Sequence[RateRule], now: float) -> None:
        """Release the wrong-code reservation of ``rules`` made at ``now``. If the store
        fails here the failure stays counted: stricter, never looser."""
        try:
            await self.store.release(list(dict.fromkeys(r.key for r in rules)), now)
        except StorageError:
            log.warning("a failed-check reservation could not be given back (it stays counted)")

    async def _converted(self, v: Verification, now: float) -> None:
        """After an approval: the refund and the earned room in every admission bucket
        (unless the number was trusted, whose sends were not counted), the number
        trusted from now on, and the conversion watch's counter."""
        number = destination_of(v)  # only the prefix and the region are needed
        if (v.country is None and not is_email(number)) or self._allowlisted(number):
            return
        trusted_key = self._trusted_key(v.to)
        # The run-time allow entries in the same read: their sends were not counted.
        listed = [] if is_email(number) else numberlists.flag_keys(v.to)
        flags = await self.store.get_flags([trusted_key, *listed], now)
        if listed and numberlists.allowed_by(flags, v.to) is not None:
            return
        was_trusted = trusted_key in flags
        if not was_trusted:
            buckets = scope_buckets(self.admission, number, v.owner)
            await self.store.credit(buckets, v.sends, now)
        if self.settings.trusted_days > 0:
            await self.store.set_flag(trusted_key, "1", now + self.settings.trusted_days * 86400.0)
        approval_rules = self.watch.approval_rules(number)
        if approval_rules:
            await self.store.hit(approval_rules, now)

    def _remaining(self, v: Verification) -> int:
        if v.status is not Status.PENDING:
            return 0
        return max(0, self.settings.max_attempts - v.attempts)

    # -- the rest -------------------------------------------------------------------

    async def _load(
        self, verification_id: str, now: float, owner: str | None = None
    ) -> Verification:
        """Fetch, marking an overdue pending verification expired. With ``owner``,
        another key's verification is not found."""
        if not isinstance(verification_id, str) or len(verification_id) > 64:
            raise NotFound("no verification with that id")
        v = await self.store.get_verification(verification_id)
        if v is None or (owner is not None and v.owner not in (owner, None)):
            raise NotFound("no verification with that id")
        if v.status is Status.PENDING and now >= v.expires_at:
            moved = await self.store.transition(v.id, [Status.PENDING], Status.EXPIRED, now)
            if moved is not None:
                await self.emit(self._event(EventType.EXPIRED, now, v=moved))
                return moved
            v = await self.store.get_verification(verification_id) or v
        return v

    async def get(self, verification_id: str, *, owner: str | None = None) -> Verification:
        """``owner``: the API key asking; another key's verification is not found."""
        return await self._load(verification_id, self.clock(), owner)

    def attempts_remaining(self, v: Verification) -> int:
        return self._remaining(v)

    async def cancel(self, verification_id: str, *, owner: str | None = None) -> Verification:
        """``owner``: the API key asking; another key's verification is not found."""
        now = self.clock()
        v = await self._load(verification_id, now, owner)
        if v.status is Status.CANCELED:
            return v
        moved = await self.store.transition(v.id, [Status.PENDING], Status.CANCELED, now)
        if moved is None:
            current = await self._load(verification_id, now)
            if current.status is Status.CANCELED:
                return current
            raise Conflict(current.status.value)
        await self.emit(self._event(EventType.CANCELED, now, v=moved))
        return moved

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
        sends = await self.store.list_events(
            EventQuery(
                types=(EventType.SENT.value, EventType.RESENT.value),
                number_hash=self.keyring.keyed_hash("number", v.to),
                since=v.created_at - 1,
                limit=100,
            )
        )
        # A send whose answer was lost has no provider id: its report settles it.
        sent = [
            e
            for e in sends
            if e.verification_id == v.id
            and (
                e.details.get("provider_id") == provider_id or e.details.get("outcome") == "unknown"
            )
        ]
        if not sent:
            return DeliveryReport.UNKNOWN_MESSAGE
        if now - max(e.ts for e in sent) > DELIVERY_REPORT_WINDOW:
            return DeliveryReport.TOO_LATE
        once = RateRule(
            "delivery_report", f"report:{provider_id}:{status}", 1, DELIVERY_REPORT_WINDOW
        )
        if not (await self.store.hit([once], now)).allowed:
            return DeliveryReport.DUPLICATE
        if status in UNDELIVERED_STATUSES and v.status is Status.PENDING:
            # The code can never arrive: the verification fails (a new start may follow).
            await self.store.transition(v.id, [Status.PENDING], Status.FAILED, now)
        if error_code is not None and self.settings.undeliverable_ttl > 0:
            from .transports.errors import reason_for_provider_code

            reason = reason_for_provider_code(error_code)
            if reason in UNDELIVERABLE_REASONS:
                await self.store.set_flag(
                    f"undeliverable:{v.to}", reason, now + self.settings.undeliverable_ttl
                )
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

    async def explain_number(self, raw: str) -> dict[str, object]:
        """The policy's decisions, with the run-time block and allow entries applied."""
        number = parse(raw, self.settings.default_region)
        info = self.policy.explain(number)
        flags = await self.store.get_flags(numberlists.flag_keys(number.e164), self.clock())
        exempt = self.policy.twilio_test_credentials and number.is_twilio_magic
        numberlists.explain(info, flags, number.e164, exempt=exempt)
        return info

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
    from .transports import email_transport_from_settings, transport_from_settings

    settings = check_startup(settings)
    return Verifier(
        settings,
        store_from_url(settings.store_url),
        transport_from_settings(settings),
        clock=clock,
        email_transport=email_transport_from_settings(settings),
    )
