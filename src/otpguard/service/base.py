"""The Verifier's construction, its lifecycle and how it records what it decides.

:class:`VerifierBase` holds what every part of the Verifier shares: the settings,
the store, the transports, the keyring, the guards, and the recording of events
and refusals. The send path (``send.py``, ``admit.py``, ``deliver.py``), the check
path (``check.py``) and the shells' operations (``operations.py``, ``records.py``)
are its subclasses; ``verifier.py`` joins them into :class:`Verifier`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import limits, refusals
from ..challenge import ChallengeVerifier
from ..clock import Clock, system_clock
from ..codes import Keyring
from ..config import Settings
from ..destinations import Destination
from ..email_address import EmailAddress
from ..email_policy import EmailPolicy, MxResolver
from ..email_policy import dev_allowed as dev_allowed_emails
from ..errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    OtpguardError,
    RateLimited,
    StorageError,
)
from ..events import (
    Event,
    EventListener,
    EventOutbox,
    EventType,
    log_event,
    mask_number,
    new_event_id,
)
from ..fraud import ConversionWatch
from ..guards import (
    AdmissionGuard,
    BudgetGuard,
    DestinationGuard,
    DevelopmentGuard,
    Guard,
    LimitGuard,
    SequentialGuard,
    Shadow,
    SuspensionGuard,
    UndeliverableGuard,
)
from ..listedit import ListEditor
from ..models import Channel, Status, Verification
from ..phone import DestinationPolicy, PhoneNumber, parse
from ..stores.base import Store
from ..transports.base import Transport

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
#: Narrows a check by number's candidates (the /v2 API: to one service's).
Selector = Callable[[list[Verification]], Awaitable[list[Verification]]]
PENDING_PER_CHECK = 5  # a check by number tries at most this many pending verifications
NO_MATCH = "no pending verification for that number matched the code"


class DeliveryReport(enum.Enum):
    """What ``record_delivery_status`` did with a report."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # the same message and status already counted: a replay
    UNKNOWN_MESSAGE = "unknown_message"  # no send of this verification had that id
    TOO_LATE = "too_late"  # the send is older than DELIVERY_REPORT_WINDOW


@dataclass(frozen=True)
class CheckResult:
    valid: bool
    status: Status
    attempts_remaining: int
    verification: Verification


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


def new_verification_id() -> str:
    return "VE" + secrets.token_hex(16)


class VerifierBase:
    """What the parts of :class:`~otpguard.service.Verifier` share."""

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
            if v.service is not None:  # the scope it was started under, kept as events are
                fields["details"] = {**fields.get("details", {}), "service": v.service}
        return Event(
            type=type_.value,
            ts=now,
            id=new_event_id(now),
            number_masked=mask_number(e164) if e164 else None,
            number_hash=self.number_hash(e164) if e164 else None,
            country=fields.pop("country", country),
            **fields,
        )

    async def emit(self, *events: Event, stored: Sequence[Event] = ()) -> None:
        """Record events: stored, logged (``log_events``), handed to the listeners and
        to the webhook outbox. The Verifier's own decisions come through here; so do
        the decisions of the jobs around it (alerts, list edits). ``stored``: events
        another store operation wrote already (a start's, by its admission), handed
        on first, as if emitted with these."""
        await self.store.add_events(events)
        await self.announce(*stored, *events)

    async def announce(self, *events: Event) -> None:
        """What ``emit`` does once the events are stored (a start's started event is
        stored by its admission, an approval's by its one ``settle`` call)."""
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

    # -- one verification -----------------------------------------------------------

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

    def _remaining(self, v: Verification) -> int:
        if v.status is not Status.PENDING:
            return 0
        return max(0, self.settings.max_attempts - v.attempts)

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

    # -- channels and numbers -----------------------------------------------------------

    def _transport_for(self, channel: Channel) -> Transport:
        if channel is Channel.EMAIL:
            assert self.email_transport is not None  # start refuses email without one
            return self.email_transport
        return self.transport

    def _allowlisted(self, number: Destination) -> bool:
        """OTPGUARD_ALLOWLIST (numbers that skip the fraud rules); never an address."""
        return isinstance(number, PhoneNumber) and self.policy.is_allowlisted(number)

    def number_hash(self, e164: str) -> str:
        """The keyed hash that stands for a number or an address in events and keys,
        under the newest key: what is stored from now on."""
        return self.keyring.keyed_hash("number", e164)

    def number_hashes(self, e164: str) -> tuple[str, ...]:
        """``number_hash`` under every listed key, newest first: what a lookup by
        number passes (``EventQuery.number_hash``), so what was stored before the
        newest key was added is still found."""
        return self.keyring.keyed_hashes("number", e164)

    def _trusted_keys(self, e164: str) -> tuple[str, ...]:
        """The number's trusted flags, newest first: read them all (trusted if any is
        set), write only the first (``_trusted_key``)."""
        return tuple("trusted:" + h for h in self.number_hashes(e164))

    def _trusted_key(self, e164: str) -> str:
        """The trusted flag an approval sets: under the newest key."""
        return "trusted:" + self.number_hash(e164)
