"""The guards that count: rate limits, cost budgets and sequential number walks."""

from __future__ import annotations

from .. import limits
from ..config import FraudSection, LimitsSection
from ..destinations import is_email
from ..errors import DestinationRefused
from ..limits import UNKNOWN_IP, ip_key, network_of
from ..models import RateDecision, RateRule
from .base import Guard, Refusal, SendContext


class LimitGuard(Guard):
    """Per number, client IP, network and account; the optional hard caps on all sends."""

    name = "rate_limits"
    key_prefixes = (
        "phone:", "ip:", "network:", "ipv6_48:", "account:", "prefix:", "country:", "global:",
        "email:", "email_domain:",
    )  # fmt: skip

    def __init__(self, section: LimitsSection) -> None:
        self.section = section

    def rules(self, ctx: SendContext) -> list[RateRule]:
        rules = limits.send_rules(self.section, ctx.number, ctx.ip)
        if ctx.account is not None:
            rules += [
                RateRule("account", f"account:{ctx.account}", w.limit, w.seconds)
                for w in self.section.account
            ]
        return rules


class BudgetGuard(Guard):
    """Hard cost caps on all sends per hour/day, globally and per country (opt-in)."""

    name = "budget_exhausted"
    fraud = True
    key_prefixes = ("budget:",)

    def __init__(self, section: FraudSection) -> None:
        self.section = section

    def rules(self, ctx: SendContext) -> list[RateRule]:
        rules = [
            RateRule("budget_global", "budget:global", w.limit, w.seconds)
            for w in self.section.budget_global
        ]
        if is_email(ctx.number):
            return rules  # a country budget is a phone number's
        return rules + [
            RateRule("budget_country", f"budget:country:{ctx.number.region}", w.limit, w.seconds)
            for w in self.section.budget_country
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

    def __init__(self, section: FraudSection) -> None:
        self.window = section.sequential_window
        self.threshold = section.sequential_threshold

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
