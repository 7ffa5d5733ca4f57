"""The typed values every layer shares: channels, statuses, verifications, outcomes.

(STYLE.md does not list this module; it exists so that stores, the service and
the web layer can share these types without importing each other.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from .purpose import LOGIN, Binding, BoundArgs


class Channel(enum.StrEnum):
    SMS = "sms"
    WHATSAPP = "whatsapp"
    VOICE = "voice"
    EMAIL = "email"


#: The channels that reach a phone number (the others reach an email address).
PHONE_CHANNELS = frozenset({Channel.SMS, Channel.WHATSAPP, Channel.VOICE})


class StartArgs(BoundArgs, total=False):
    """A start's keywords that travel unchanged from its caller (the Python client,
    the HTTP API) to ``Verifier.start``: what the code is for, the CAPTCHA token after
    a ``challenge_required`` answer, and the app's own user or session id."""

    challenge_token: str | None
    account_id: str | None


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    CANCELED = "canceled"
    EXPIRED = "expired"
    MAX_ATTEMPTS_REACHED = "max_attempts_reached"
    FAILED = "failed"


FINAL_STATUSES = frozenset(s for s in Status if s is not Status.PENDING)


@dataclass(frozen=True)
class Verification:
    """One verification as stored: never the code, only its keyed HMAC."""

    id: str
    to: str  # E.164, or the normalised address for the email channel
    channel: Channel
    status: Status
    key_id: str
    code_hash: str
    created_at: float
    updated_at: float
    expires_at: float
    resend_available_at: float
    attempts: int = 0  # checks counted against the current verification
    sends: int = 1  # messages sent for it (first send + resends)
    client_ip: str | None = None
    country: str | None = None
    locale: str | None = None
    code_length: int = 6
    service_name: str | None = None  # overrides the configured name in messages
    owner: str | None = None  # the API key (its public id) that started it
    # What the code is for (purpose.py), bound into its tag; kept for resends and answers.
    purpose: str = LOGIN
    amount: str | None = None  # canonical: exactly the currency's minor units
    currency: str | None = None  # ISO 4217
    payee: str | None = None
    # The scope a shell started it under, opaque to the engine (the /v2 service SID):
    # stored with the row, carried by its events, narrowing a shell's reads to it.
    service: str | None = None
    # Not stored: what the start or resend that returned it knows of its message,
    # "sent" or "unknown" (the provider may have sent it; its answer was lost), and
    # the id of the event that recorded that message (at ``updated_at``, of its
    # channel) once stored; None if its bookkeeping failed.
    delivery: str | None = None
    sent_event: str | None = None

    @property
    def binding(self) -> Binding:
        return Binding(self.purpose, self.amount, self.currency, self.payee)

    def with_(self, **changes: object) -> Verification:
        return replace(self, **changes)  # type: ignore[arg-type]  # field names checked by replace()

    def __repr__(self) -> str:  # keep tags out of reprs and tracebacks
        return (
            f"Verification(id={self.id!r}, channel={self.channel.value!r}, "
            f"status={self.status.value!r}, attempts={self.attempts})"
        )


class AttemptOutcome(enum.StrEnum):
    """What ``Store.record_attempt`` found when it counted a check."""

    COUNTED = "counted"  # pending, not expired, under the cap: attempt counted, compare now
    NOT_PENDING = "not_pending"  # already final (approved, canceled, failed, ...)
    EXPIRED = "expired"  # was pending but past expiry: now marked expired
    LOCKED = "locked"  # attempts already at the cap: nothing counted, status unchanged


@dataclass(frozen=True)
class AttemptTicket:
    outcome: AttemptOutcome
    verification: Verification  # state after the operation


@dataclass(frozen=True)
class RateRule:
    """``limit`` events per ``window`` seconds under ``key``; ``name`` is the rule reported.

    ``record_only``: counted with the send, never refuses (a counter for the guards).
    ``skip_if_seen``: when that key has an entry in the window, this rule is neither
    enforced nor recorded (so "distinct numbers per range" counts each number once),
    decided inside the same atomic operation."""

    name: str
    key: str
    limit: int
    window: int
    record_only: bool = False
    skip_if_seen: str | None = None


@dataclass(frozen=True)
class Bucket:
    """A shared-capacity scope's room for *unconverted* sends (``admission.py``).

    Its level rises by one per send and falls by one per approval (the refund);
    its allowance is ``base + share x earned``, where ``earned`` counts approvals.
    Both decay exponentially with time constant ``tau`` seconds."""

    name: str  # reported as the refusing rule: global, country, block, api_key
    key: str
    base: float
    tau: float
    share: float


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    rule: str | None = None
    retry_after: float = 0.0
    count: int = 0  # for the refusing rule (or the fullest rule when allowed)
    challenge: bool = False  # refused only because a bucket is under pressure (soft)
    key: str | None = None  # the refusing rule's or bucket's key
