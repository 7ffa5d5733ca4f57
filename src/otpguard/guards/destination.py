"""Where a send may go: the destination policy with the run-time lists, development's
guard on live credentials, and numbers the provider recently could not reach."""

from __future__ import annotations

from .. import numberlists
from ..destinations import is_email
from ..email_address import EmailAddress, in_domains
from ..email_policy import RESERVED_DOMAINS, EmailPolicy
from ..errors import DestinationRefused
from ..phone import DestinationPolicy
from .base import Guard, Refusal, SendContext


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
        production: bool,
        allowed: frozenset[str],
        emails: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    ) -> None:
        self.production = production
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
                "destination refused: development mode with a transport that reaches real "
                "phones (such as Twilio with live credentials) only sends to Twilio's magic "
                "numbers or to numbers listed in OTPGUARD_DEV_ALLOWED_NUMBERS",
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
