"""Admission: the guards every send passes, and the one atomic step that counts it.

``_admit`` reads every guard's flags in one ``store.get_flags``, runs each guard's
``check`` in order, then hands every guard's rules and buckets to one atomic
``store.admit``, which decides the rate windows and the admission buckets and
records the send in the same transaction or script (a start's verification and
started event with it). A refusal is turned into an
answer by the guard that owns the refusing key.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

from .. import limits, numberlists
from ..challenge import token_fingerprint
from ..destinations import Destination, is_email
from ..errors import (
    ChallengeRequired,
    ChallengeUnavailable,
    DestinationRefused,
    InvalidRequest,
    OtpguardError,
    RateLimited,
)
from ..events import Event, EventType
from ..guards import Guard, Refusal, SendContext, Shadow
from ..models import Channel, RateDecision, RateRule
from ..stores.base import FLAGS_SET, Started
from .base import VerifierBase

CHALLENGE_TOKEN_WINDOW = 3600  # seconds a used challenge token is remembered
REUSED_RULE = "challenge_reused"  # the rule that admits each challenge token once


class _Again(enum.Enum):
    """What an admission judged with its flags taken as unset answers when they matter."""

    FLAGS_SET = "flags_set"


_FLAGS_SET = _Again.FLAGS_SET


def _ip_or_none(ip: str) -> str | None:
    return None if ip == limits.UNKNOWN_IP else ip


def _channel(value: str | Channel) -> Channel:
    try:
        return Channel(value)
    except ValueError:
        raise InvalidRequest(
            f"'channel' must be one of {', '.join(c.value for c in Channel)}"
        ) from None


class Admitting(VerifierBase):
    """The guards and the atomic admission of a send."""

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
            trusted_keys=self._trusted_keys(number.e164),
            reaches_real_phones=self._transport_for(ch).reaches_real_phones,
        )

    async def _admit(
        self,
        ctx: SendContext,
        challenge_token: str | None,
        *,
        starting: bool = True,
        start: Callable[[], Started] | None = None,
    ) -> Started | None:
        """Run the guards: every refusal happens before a message is sent. On success
        the send is counted (limits, admission buckets, counters) in one atomic step;
        a start's ``start()`` (called once the guards passed) makes the verification
        and events that step stores with it, and is returned. A resend
        (``starting=False``) is never challenged: it cannot carry a token, and its
        verification was admitted already."""
        # Every guard's flags (the run-time allow entries are among them).
        keys = list(dict.fromkeys(k for g in self.guards for k in g.flag_keys(ctx)))
        if keys and start is not None and challenge_token is None and not self._shadowed:
            # Most starts find no flag set: judged as if none were, the admission
            # confirms it in its own atomic step (``Started.unless_flags``); when one
            # is set, or a guard refuses, the flags are read and the start judged again.
            ctx.flags = {}
            admitted = await self._judge(ctx, None, starting, start, unless=tuple(keys))
            if not isinstance(admitted, _Again):
                return admitted
        ctx.flags = await self.store.get_flags(keys, ctx.now) if keys else {}
        judged = await self._judge(ctx, challenge_token, starting, start)
        assert not isinstance(judged, _Again)
        return judged

    @property
    def _shadowed(self) -> bool:
        return any(isinstance(g, Shadow) for g in self.guards)

    async def _judge(
        self,
        ctx: SendContext,
        challenge_token: str | None,
        starting: bool,
        start: Callable[[], Started] | None,
        unless: tuple[str, ...] = (),
    ) -> Started | _Again | None:
        """The guards over ``ctx.flags``, then the atomic admission. With ``unless``
        (the flags taken as unset), whatever the flags could change is not answered
        but returned as ``_FLAGS_SET``: a guard's refusal, a challenge required, the
        store finding a flag set."""
        number, now = ctx.number, ctx.now
        allowlisted = self._allowlisted(number) or (
            not is_email(number) and numberlists.allowed_by(ctx.flags, number.e164) is not None
        )
        ctx.allowlisted = allowlisted
        # The allowlist skips the fraud guards and admission, never policy or limits.
        guards = [g for g in self.guards if not (allowlisted and g.fraud)]
        for guard in guards:
            refusal = guard.check(ctx)
            if refusal is not None:
                if unless:
                    return _FLAGS_SET
                raise await self._refuse_with(refusal, ctx)
        await self._emit_shadows(ctx)
        rules = [r for g in guards for r in g.rules(ctx)]
        rules += self.watch.send_rules(number)
        buckets = [] if allowlisted else [b for g in guards for b in g.buckets(ctx)]
        pressure = None
        if buckets and starting:
            if unless and self.challenge is not None and self.challenge.mode == "always":
                return _FLAGS_SET
            pressure = await self._challenge_step(ctx, challenge_token, rules)
        started = None if start is None else start()
        if started is not None and unless:
            started = dataclasses.replace(started, unless_flags=unless)
        decision = await self.store.admit(
            rules, buckets, now, pressure=pressure, force=ctx.challenge_passed, start=started
        )
        if not decision.allowed:
            if decision.rule == FLAGS_SET:
                return _FLAGS_SET
            raise await self._refuse_with(self._refusal_of(decision, guards, ctx), ctx)
        return started

    async def _challenge_step(
        self, ctx: SendContext, token: str | None, rules: list[RateRule]
    ) -> float | None:
        """The CAPTCHA step of a start that fills admission buckets: verify the token
        (each admits one start: a rule added to ``rules``), or refuse when the mode is
        ``always``; otherwise the pressure at which ``store.admit`` asks for one."""
        challenge = self.challenge
        if challenge is None:
            return None
        if token is None:
            if challenge.mode == "always":
                raise await self._refuse_with(self._challenge("challenge_required"), ctx)
            return self.settings.admission_pressure
        try:
            ctx.challenge_passed = await challenge.verify(token, _ip_or_none(ctx.ip))
        except ChallengeUnavailable as unavailable:
            raise await self._refuse_with(Refusal(unavailable), ctx) from None
        if not ctx.challenge_passed:
            raise await self._refuse_with(self._challenge("challenge_failed"), ctx)
        # Each token admits one start, counted in the same atomic step.
        key = f"challenge:{token_fingerprint(token)}"
        rules.append(RateRule(REUSED_RULE, key, 1, CHALLENGE_TOKEN_WINDOW))
        return None

    def _refusal_of(self, decision: RateDecision, guards: list[Guard], ctx: SendContext) -> Refusal:
        """The answer to the store's refusal: from the guard that owns the key."""
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
        if isinstance(refusal.error, ChallengeRequired) and self.challenge is not None:
            refusal.error.challenge = self.challenge.describe()
        return refusal

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
