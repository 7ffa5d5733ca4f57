"""Prefixes, countries and email domains the conversion watch (``fraud.py``) suspended."""

from __future__ import annotations

import json

from ..destinations import Destination, is_email
from ..errors import DestinationRefused
from .base import Guard, Refusal, SendContext


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
