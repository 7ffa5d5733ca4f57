"""The send path as a pipeline of guards.

Each guard has one job. It says which flags it needs read (``flag_keys``), may
refuse on what was read (``check``), and says what the send must count
(``rules``: rate windows; ``buckets``: admission). The Verifier reads every
guard's flags in one store call, runs the checks in order, then hands every
rule and bucket to one atomic ``Store.admit``; a refusal there is turned into
an answer by the guard that owns the refusing key (``refusal``). The Verifier
knows no rule by name.

Shadow mode is :class:`Shadow`, a wrapper around any guard: its refusals become
``fraud.shadow`` events and its rules are recorded but never refuse.

================== ==================================================== ============
guard              job                                                  refuses with
================== ==================================================== ============
DestinationGuard   country, number type, block and allow lists;         403
                   email: allowed, disposable domains (email_policy.py)
DevelopmentGuard   live credentials in development reach listed numbers 403
                   (email: reserved and listed domains or addresses)
UndeliverableGuard numbers the provider recently could not reach        403
SuspensionGuard    prefixes/countries suspended on low conversion       403 (opt-in)
LimitGuard         per number or mailbox, IP, network, account; caps    429
SequentialGuard    one IP or network walking a number range             403
AdmissionGuard     shared capacity paid for in conversions              429 / 428
================== ==================================================== ============

Phone-only guards (sequential numbers, country budgets, number blocks) pass an
email address by; an address is judged by its domain instead (limits,
admission, the conversion watch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from . import admission, limits, numberlists
from .config import Settings
from .destinations import Destination, is_email
from .email_address import EmailAddress, in_domains
from .email_policy import RESERVED_DOMAINS, EmailPolicy
from .errors import ChallengeRequired, DestinationRefused, OtpguardError, RateLimited
from .limits import UNKNOWN_IP, ip_key, network_of
from .models import Bucket, Channel, RateDecision, RateRule
from .phone import DestinationPolicy

#: Number blocks judged by admission, as digits cut from the end of the E.164 form.
BLOCK_DIGITS = (4, 5, 6)


@dataclass
class SendContext:
    """What the guards know about one send."""

    number: Destination  # a phone number, or an address for the email channel
    channel: Channel
    ip: str
    now: float
    owner: str | None = None  # the API key's public id
    account: str | None = None  # keyed hash of the caller's account_id
    trusted_key: str = ""  # the flag that says the number converted recently
    reaches_real_phones: bool = False
    challenge_passed: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    allowlisted: bool = False  # on the configured or the run-time allowlist

    @property
    def trusted(self) -> bool:
        return self.trusted_key in self.flags


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
        return self.inner.buckets(ctx)  # the Verifier records them forced (see Pipeline)

    def refusal(self, ctx: SendContext, decision: RateDecision) -> Refusal:
        return self.inner.refusal(ctx, decision)


class DestinationGuard(Guard):
    """The destination policy, with the run-time block entries (``numberlists.py``) read
    in the send's one flag read: a block entry for the number or a prefix of it refuses
    as the configured blocklist does."""

    name = "destination"

    def __init__(self, policy: DestinationPolicy, email: EmailPolicy) -> None:
        self.policy = policy
        self.email = email

    def flag_keys(self, ctx: SendContext) -> list[str]:
        if isinstance(ctx.number, EmailAddress):
            return []  # the run-time lists hold numbers and prefixes
        return numberlists.flag_keys(ctx.number.e164)

    def check(self, ctx: SendContext) -> Refusal | None:
        number = ctx.number
        if isinstance(number, EmailAddress):
            decision = self.email.decide(number)
        else:
            magic = self.policy.twilio_test_credentials and number.is_twilio_magic
            if not magic and numberlists.blocked_by(ctx.flags, number.e164) is not None:
                return Refusal(DestinationRefused("blocklisted"), details={"list": "runtime"})
            decision = self.policy.decide(number, ctx.channel)
        if decision.allowed:
            return None
        assert decision.reason is not None
        return Refusal(DestinationRefused(decision.reason))


class DevelopmentGuard(Guard):
    """Development with live credentials may only reach magic or listed numbers; with
    a real email transport, reserved domains (example.com, .test, ...) and the
    addresses and @domains of OTPGUARD_DEV_ALLOWED_EMAILS."""

    name = "development_guard"

    def __init__(
        self,
        settings: Settings,
        allowed: frozenset[str],
        emails: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    ) -> None:
        self.production = settings.production
        self.allowed = allowed
        self.emails, self.email_domains = emails[0], RESERVED_DOMAINS | emails[1]

    def check(self, ctx: SendContext) -> Refusal | None:
        if self.production or not ctx.reaches_real_phones:
            return None
        number = ctx.number
        if is_email(number):
            if number.address in self.emails or in_domains(number.domain, self.email_domains):
                return None
            return Refusal(
                DestinationRefused(
                    "development_guard",
                    "destination refused: development mode with a real email transport only "
                    "sends to reserved domains (example.com, .test) or to addresses listed in "
                    "OTPGUARD_DEV_ALLOWED_EMAILS",
                )
            )
        if number.is_twilio_magic or number.e164 in self.allowed:
            return None
        return Refusal(
            DestinationRefused(
                "development_guard",
                "destination refused: development mode with live Twilio credentials only sends "
                "to Twilio's magic numbers or to numbers listed in OTPGUARD_DEV_ALLOWED_NUMBERS",
            )
        )


class UndeliverableGuard(Guard):
    name = "undeliverable"

    def flag_keys(self, ctx: SendContext) -> list[str]:
        return [undeliverable_key(ctx.number.e164)]

    def check(self, ctx: SendContext) -> Refusal | None:
        flag = ctx.flags.get(undeliverable_key(ctx.number.e164))
        if flag is None:
            return None
        return Refusal(
            DestinationRefused(
                "undeliverable", f"destination refused: recently undeliverable ({flag})"
            ),
            details={"provider_reason": flag},
        )


def undeliverable_key(e164: str) -> str:
    return f"undeliverable:{e164}"


class LimitGuard(Guard):
    """Per number, client IP, network and account; the optional hard caps on all sends."""

    name = "rate_limits"
    key_prefixes = (
        "phone:", "ip:", "network:", "ipv6_48:", "account:", "prefix:", "country:", "global:",
        "email:", "email_domain:",
    )  # fmt: skip

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def rules(self, ctx: SendContext) -> list[RateRule]:
        rules = limits.send_rules(self.settings, ctx.number, ctx.ip)
        if ctx.account is not None:
            rules += [
                RateRule("account", f"account:{ctx.account}", limit, w)
                for limit, w in self.settings.windows("limit_account")
            ]
        return rules


class BudgetGuard(Guard):
    """Hard cost caps on all sends per hour/day, globally and per country (opt-in)."""

    name = "budget_exhausted"
    fraud = True
    key_prefixes = ("budget:",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def rules(self, ctx: SendContext) -> list[RateRule]:
        s = self.settings
        if is_email(ctx.number):
            return [
                RateRule("budget_global", "budget:global", limit, w)
                for limit, w in s.windows("fraud_budget_global")
            ]
        return [
            RateRule("budget_global", "budget:global", limit, w)
            for limit, w in s.windows("fraud_budget_global")
        ] + [
            RateRule("budget_country", f"budget:country:{ctx.number.region}", limit, w)
            for limit, w in s.windows("fraud_budget_country")
        ]

    def refusal(self, ctx: SendContext, decision: RateDecision) -> Refusal:
        scope = "global" if decision.rule == "budget_global" else f"country {ctx.number.region}"
        return Refusal(
            DestinationRefused("fraud:budget_exhausted"),
            "budget_exhausted",
            {"subject": scope, "sent": decision.count, "retry_after": decision.retry_after},
        )


class SequentialGuard(Guard):
    """One client IP or network sending to many distinct numbers of one range.

    Distinct numbers are counted with ``skip_if_seen`` inside the atomic admit, so
    concurrent starts cannot all pass (they did when the count was read first)."""

    name = "sequential_numbers"
    fraud = True
    key_prefixes = ("fraud:seq",)

    def __init__(self, settings: Settings) -> None:
        self.window = settings.fraud_sequential_window
        self.threshold = settings.fraud_sequential_threshold

    def rules(self, ctx: SendContext) -> list[RateRule]:
        if ctx.ip == UNKNOWN_IP or ctx.number.is_twilio_magic or is_email(ctx.number):
            return []  # the shared bucket is the ip/network limits' job; email: the domain's
        out: list[RateRule] = []
        for scope, who in (("ip", ip_key(ctx.ip)), ("network", network_of(ctx.ip))):
            seen = f"fraud:seqseen:{scope}:{who}:{ctx.number.e164}"
            out += [
                RateRule("seq", seen, 1, self.window, record_only=True),
                RateRule(
                    f"sequential_numbers:{scope}",
                    f"fraud:seq:{scope}:{who}:{ctx.number.prefix}",
                    self.threshold - 1,
                    self.window,
                    skip_if_seen=seen,
                ),
            ]
        return out

    def refusal(self, ctx: SendContext, decision: RateDecision) -> Refusal:
        scope = (decision.rule or "").rpartition(":")[2]
        who = ip_key(ctx.ip) if scope == "ip" else network_of(ctx.ip)
        return Refusal(
            DestinationRefused("fraud:sequential_numbers"),
            "sequential_numbers",
            {
                "subject": f"{scope} {who} -> prefix {ctx.number.prefix}",
                "distinct_numbers": decision.count + 1,
                "window_s": self.window,
                "threshold": self.threshold,
            },
        )


class SuspensionGuard(Guard):
    """Refuses prefixes and countries suspended by the conversion watch (opt-in:
    ``OTPGUARD_FRAUD_SUSPEND_ON_LOW_CONVERSION``). Trusted numbers pass."""

    name = "low_conversion"
    fraud = True

    def flag_keys(self, ctx: SendContext) -> list[str]:
        return [suspension_key(s) for s in subjects(ctx.number)]

    def check(self, ctx: SendContext) -> Refusal | None:
        if ctx.trusted:
            return None
        for subject in subjects(ctx.number):
            raw = ctx.flags.get(suspension_key(subject))
            if raw is not None:
                figures = load_figures(raw)
                until = float(figures.get("until", ctx.now))
                return Refusal(
                    DestinationRefused("fraud:low_conversion"),
                    "low_conversion",
                    {"subject": subject, **figures, "retry_after": until - ctx.now},
                )
        return None


def subjects(number: Destination) -> tuple[str, ...]:
    if is_email(number):
        return (f"domain {number.domain}",)
    return f"prefix {number.prefix}", f"country {number.region}"


def suspension_key(subject: str) -> str:
    return f"fraud:suspended:{subject}"


def load_figures(raw: str) -> dict[str, float | int | str]:
    """A suspension's stored figures (JSON); a malformed flag still suspends."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int | float | str)}


class AdmissionGuard(Guard):
    """Shared capacity paid for in conversions (``admission.py``). Trusted numbers
    skip it; under pressure, with a challenge provider, it asks for a challenge."""

    name = "admission"
    fraud = True
    key_prefixes = ("adm:",)

    def __init__(self, settings: Settings, *, challenge_configured: bool = False) -> None:
        self.share = settings.admission_share
        self.challenge_configured = challenge_configured
        # Parsed once: the buckets are built on every send.
        self.specs: dict[str, list[tuple[float, int]]] = {
            "global": admission.parse_buckets(settings.admission_global),
            "country": admission.parse_buckets(settings.admission_country),
            **{
                f"block{d}": admission.parse_buckets(str(getattr(settings, f"admission_block_{d}")))
                for d in BLOCK_DIGITS
            },
            "key": admission.parse_buckets(settings.admission_api_key),
            "domain": admission.parse_buckets(settings.admission_email_domain),
        }

    def flag_keys(self, ctx: SendContext) -> list[str]:
        return [ctx.trusted_key]

    def buckets(self, ctx: SendContext) -> list[Bucket]:
        if ctx.trusted:
            return []
        return scope_buckets(self, ctx.number, ctx.owner)

    def refusal(self, ctx: SendContext, decision: RateDecision) -> Refusal:
        scope = scope_of(decision.key or "")
        details = {"scope": scope, "unconverted": decision.count}
        if decision.challenge:
            return Refusal(
                ChallengeRequired(
                    {},  # the Verifier fills in its provider
                    scope=scope,
                    message=f"{scope} is under pressure from unconverted sends: pass the "
                    "challenge and repeat the start with challenge_token",
                ),
                decision.rule,
                details,
            )
        hint = (
            "a passed challenge admits the start"
            if self.challenge_configured
            else "a challenge provider (OTPGUARD_CHALLENGE_PROVIDER) would admit verified people"
        )
        return Refusal(
            RateLimited(
                decision.rule or "admission",
                decision.retry_after,
                f"{scope} is under pressure: too many codes sent there were never typed; "
                f"retry after {max(1, int(decision.retry_after))} s, or {hint}",
            ),
            decision.rule,
            details,
        )


def scope_buckets(guard: AdmissionGuard, number: Destination, owner: str | None) -> list[Bucket]:
    """Every bucket a send to ``number`` through API key ``owner`` fills: for an
    address, the global bucket and its domain's instead of a country's and blocks'."""
    subjects_ = [("global", "global", "all")]
    if is_email(number):
        subjects_.append(("domain", "domain", number.domain))
    else:
        subjects_.append(("country", "country", str(number.region)))
        subjects_ += [("block", f"block{d}", number.e164[:-d]) for d in BLOCK_DIGITS]
    if owner is not None:
        subjects_.append(("api_key", "key", owner))
    out = []
    for name, kind, value in subjects_:
        for base, tau in guard.specs[kind]:
            out.append(Bucket(name, f"adm:{kind}:{value}:{tau}", base, float(tau), guard.share))
    return out


def scope_of(key: str) -> str:
    """``adm:country:GB:600`` -> ``country GB``; ``adm:block4:+44740012:43200`` ->
    ``block +44740012``; ``adm:key:og_x:600`` -> ``api key og_x``."""
    parts = key.split(":")
    if len(parts) < 3:
        return key
    kind, value = parts[1], ":".join(parts[2:-1])
    if kind.startswith("block"):
        return f"block {value}"
    if kind == "key":
        return f"api key {value}"
    return "all traffic" if kind == "global" else f"{kind} {value}"
