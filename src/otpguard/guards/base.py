"""What every guard is: the send's context, a refusal, the :class:`Guard` with its
harmless defaults, and :class:`Shadow`, which turns any guard's refusals into records."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..destinations import Destination
from ..errors import OtpguardError, RateLimited
from ..models import Bucket, Channel, RateDecision, RateRule


@dataclass
class SendContext:
    """What the guards know about one send."""

    number: Destination  # a phone number, or an address for the email channel
    channel: Channel
    ip: str
    now: float
    owner: str | None = None  # the API key's public id
    account: str | None = None  # keyed hash of the caller's account_id
    # The flags that say the number converted recently: one per listed key, newest
    # first (a flag set before a rotation is under an older key's hash).
    trusted_keys: tuple[str, ...] = ()
    reaches_real_phones: bool = False
    challenge_passed: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    allowlisted: bool = False  # on the configured or the run-time allowlist

    @property
    def trusted(self) -> bool:
        return any(k in self.flags for k in self.trusted_keys)


@dataclass(frozen=True)
class Refusal:
    """A guard's answer: the error to raise and what the event records."""

    error: OtpguardError
    rule: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return str(getattr(self.error, "reason", None) or self.error.code)


class Guard:
    """One rule of the send path. Every method has a harmless default."""

    name = "guard"  # what OTPGUARD_FRAUD_SHADOW names
    fraud = False  # a fraud rule: allowlisted numbers skip it
    key_prefixes: tuple[str, ...] = ()  # the store keys this guard's rules use

    def flag_keys(self, ctx: SendContext) -> list[str]:
        return []

    def check(self, ctx: SendContext) -> Refusal | None:
        return None

    def rules(self, ctx: SendContext) -> list[RateRule]:
        return []

    def buckets(self, ctx: SendContext) -> list[Bucket]:
        return []

    def owns(self, key: str) -> bool:
        return key.startswith(self.key_prefixes) if self.key_prefixes else False

    def refusal(self, ctx: SendContext, decision: RateDecision) -> Refusal:
        assert decision.rule is not None
        return Refusal(
            RateLimited(decision.rule, decision.retry_after),
            decision.rule,
            {"count": decision.count},
        )


class Shadow(Guard):
    """Evaluate ``inner`` and record what it would have refused, refusing nothing."""

    def __init__(self, inner: Guard) -> None:
        self.inner = inner
        self.name = inner.name
        self.fraud = inner.fraud
        self.key_prefixes = inner.key_prefixes
        self.would_refuse: list[Refusal] = []

    def flag_keys(self, ctx: SendContext) -> list[str]:
        return self.inner.flag_keys(ctx)

    def check(self, ctx: SendContext) -> Refusal | None:
        refusal = self.inner.check(ctx)
        if refusal is not None:
            self.would_refuse.append(refusal)
        return None

    def rules(self, ctx: SendContext) -> list[RateRule]:
        return [replace(r, record_only=True) for r in self.inner.rules(ctx)]

    def buckets(self, ctx: SendContext) -> list[Bucket]:
        return self.inner.buckets(ctx)  # the engine records them forced (see Pipeline)

    def refusal(self, ctx: SendContext, decision: RateDecision) -> Refusal:
        return self.inner.refusal(ctx, decision)
