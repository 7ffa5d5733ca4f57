"""Shared capacity paid for in conversions (``otpguard.admission`` holds the arithmetic)."""

from __future__ import annotations

from ..config import AdmissionSection, Windows
from ..destinations import Destination, is_email
from ..errors import ChallengeRequired, RateLimited
from ..models import Bucket, RateDecision
from .base import Guard, Refusal, SendContext

#: Number blocks judged by admission, as digits cut from the end of the E.164 form.
BLOCK_DIGITS = (4, 5, 6)


class AdmissionGuard(Guard):
    """Shared capacity paid for in conversions (``admission.py``). Trusted numbers
    skip it; under pressure, with a challenge provider, it asks for a challenge."""

    name = "admission"
    fraud = True
    key_prefixes = ("adm:",)

    def __init__(self, section: AdmissionSection, *, challenge_configured: bool = False) -> None:
        self.share = section.share
        self.challenge_configured = challenge_configured
        self.specs: dict[str, list[tuple[float, int]]] = {
            "global": _buckets(section.global_),
            "country": _buckets(section.country),
            **{f"block{d}": _buckets(section.blocks(d)) for d in BLOCK_DIGITS},
            "key": _buckets(section.api_key),
            "domain": _buckets(section.email_domain),
        }

    def flag_keys(self, ctx: SendContext) -> list[str]:
        return list(ctx.trusted_keys)

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
                    {},  # the engine fills in its provider
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


def _buckets(windows: Windows) -> list[tuple[float, int]]:
    """A setting's buckets as (base, tau) pairs: ``80/10h`` is a base of 80, tau 10 h."""
    return [(float(w.limit), w.seconds) for w in windows]


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
