"""The send path: ``start`` and ``resend``.

Order of a send, each refusal before any message leaves::

    validate the arguments -> parse the destination -> MX (email) -> admit (the
    guards, then one atomic store.admit that also stores the new verification, its
    code's tag and its started event) -> transport

Admission is ``admit.py``; the message and what follows it, ``deliver.py``.
"""

from __future__ import annotations

from typing import Unpack

from .. import limits, tags
from ..codes import generate_code
from ..destinations import Destination, parse_destination
from ..errors import Conflict, InvalidRequest, RateLimited
from ..events import EventType
from ..models import Channel, StartArgs, Status, Verification
from ..purpose import TRANSACTION, Binding, bind
from ..stores.base import Started
from ..transports.base import pick_locale
from .admit import Admitting
from .base import new_verification_id
from .deliver import Delivering
from .plan import plan_of


def _split(args: StartArgs) -> tuple[str | None, str | None, Binding]:
    """``account_id``, ``challenge_token`` and the validated binding; a keyword that is
    none of these is a ``TypeError``, as it is for any signature."""
    bound = {k: v for k, v in args.items() if k not in ("account_id", "challenge_token")}
    return args.get("account_id"), args.get("challenge_token"), bind(**bound)


def _validate_start(
    ch: Channel,
    binding: Binding,
    locale: str | None,
    length: object,
    service_name: str | None,
    account_id: str | None,
    challenge_token: str | None,
) -> None:
    """Refuse a malformed start before anything is counted: a bad request spends no quota."""
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


class Sending(Admitting, Delivering):
    """Start and resend verifications."""

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
        service: str | None = None,
        **args: Unpack[StartArgs],
    ) -> Verification:
        """Create a verification, send its code, return it (never the code).

        ``code_length`` (6-10) and ``service_name`` override the settings for this
        verification (the Twilio Verify-compatible API uses them per service).
        ``owner`` is the API key's id (its own admission bucket); ``account_id`` the
        app's own user or session id (its own limits, stored only as a keyed hash);
        ``challenge_token`` a CAPTCHA token after a ``challenge_required`` answer.
        ``purpose`` (default ``login``), and for ``transaction`` the ``amount`` in
        ``currency`` and the ``payee``, are bound into the code (``purpose.py``): its
        check must name the same. ``service`` is a shell's opaque scope (the /v2
        service SID), kept in the row and its events at no store call of its own.
        Every argument is validated before anything is counted."""
        now = self.clock()
        ip = limits.normalize_ip(client_ip)
        ch = self._offered(channel)
        account_id, challenge_token, binding = _split(args)
        length = self.settings.code_length if code_length is None else code_length
        _validate_start(ch, binding, locale, length, service_name, account_id, challenge_token)
        try:
            number = parse_destination(to, ch, self.settings.default_region)
        except InvalidRequest as exc:
            raise await self._refuse(exc, now, None, ip, ch, owner=owner) from None
        await self._check_mx(number, ch, ip, now)
        ctx = self._context(number, ch, ip, now, owner, account_id)
        code = ""

        def begin() -> Started:
            """The verification and its started event, recorded by the admission."""
            nonlocal code
            code = generate_code(length)
            v = self._new_verification(
                number, ch, code, binding, ip, now, locale, service_name, owner
            ).with_(service=service)
            # The purpose, when not login; never the amount or payee (events are kept long).
            details = {} if binding.is_default else {"purpose": binding.purpose}
            started = self._event(
                EventType.STARTED, now, number=number, v=v, client_ip=ip, details=details
            )
            plan = plan_of(self, v) if self.store.judges_checks else None
            return Started(v, (started,), plan=plan)

        begun = await self._admit(ctx, challenge_token, start=begin)
        assert begun is not None  # admitted: begin() ran
        return await self._deliver(
            begun.verification, number, code, ip, now, EventType.SENT, *begun.events,
            allowlisted=ctx.allowlisted,
        )  # fmt: skip

    def _new_verification(
        self,
        number: Destination,
        ch: Channel,
        code: str,
        binding: Binding,
        ip: str,
        now: float,
        locale: str | None,
        service_name: str | None,
        owner: str | None,
    ) -> Verification:
        """A pending verification for ``code``: only its tag is kept (``Keyring.sign``)."""
        vid = new_verification_id()
        key_id, tag = self.keyring.sign(vid, number.e164, ch.value, code, binding.tag_parts())
        return Verification(
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
            code_length=len(code),
            service_name=service_name,
            owner=owner,
            purpose=binding.purpose,
            amount=binding.amount,
            currency=binding.currency,
            payee=binding.payee,
        )

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
            replaces=v.code_hash,
        )
        if updated is None:  # lost a race with another resend, a check or a cancel
            current = await self._load(verification_id, now)
            if current.status is not Status.PENDING:
                raise Conflict(current.status.value)
            raise RateLimited("cooldown", max(1.0, current.resend_available_at - now))
        return await self._deliver(
            updated, number, code, ip, now, EventType.RESENT, allowlisted=ctx.allowlisted
        )
