"""A client for the otpguard HTTP API: :class:`Client` (sync) and :class:`AsyncClient`.

Your backend talks to otpguard server to server, with an API key
(``otpguard api-keys create --name my-app``)::

    from otpguard import Client, RateLimited

    otp = Client("http://127.0.0.1:8000", api_key)
    v = otp.start("+447400123456", "sms", client_ip=end_user_ip)
    ...
    result = otp.check(v.id, code=typed_code, client_ip=end_user_ip)
    if result.valid:
        log_the_user_in()

A code for a payment names it, and its check must name the same::

    v = otp.start(number, purpose="transaction", amount="25.00", currency="GBP",
                  payee="Acme Ltd")
    result = otp.check(v.id, code=typed_code, purpose="transaction", amount="25.00",
                       currency="GBP", payee="Acme Ltd")

Failures raise the classes of :mod:`otpguard.errors`, rebuilt from the API's
``{"error": {"code", "message", ...}}``: :class:`~otpguard.errors.RateLimited`
(``rule``, ``retry_after``), :class:`~otpguard.errors.DestinationRefused`
(``reason``), :class:`DeliveryFailed` (``reason``, ``provider_code``),
:class:`~otpguard.errors.Conflict` (``reason``),
:class:`~otpguard.errors.ChallengeRequired` (``provider``, ``site_key``, ``reason``:
show the CAPTCHA, then repeat the start with ``challenge_token=``), ... A server that cannot be
reached or does not answer in time raises :class:`Unreachable`. Both mean the
same to a login page: no code was checked, so nobody signs in (fail closed).

The two classes share everything but the I/O: each method builds a
:class:`_Call`, sends it with httpx's sync or async client, and parses the
answer with the same functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from .errors import (
    ChallengeRequired,
    ChallengeUnavailable,
    ConfigError,
    Conflict,
    DeliveryError,
    DestinationRefused,
    Forbidden,
    HttpsRequired,
    InvalidEmailAddress,
    InvalidPhoneNumber,
    InvalidRequest,
    NotFound,
    OtpguardError,
    RateLimited,
    StorageError,
    Unauthorized,
)
from .models import Channel, Status
from .version import VERSION
from .webhook_signature import WebhookSignatureError, verify_webhook

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "CheckOutcome",
    "Client",
    "DeliveryFailed",
    "Unreachable",
    "VerificationInfo",
    "WebhookSignatureError",
    "verify_webhook",
]

#: Connect within 3 s; the server may take up to its Twilio timeout (10 s) to send.
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=3.0)
DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = f"otpguard-client/{VERSION}"

T = TypeVar("T")


class DeliveryFailed(DeliveryError):
    """otpguard could not deliver the message (``reason``, ``provider_code``)."""


class Unreachable(OtpguardError):
    """The otpguard server could not be reached or did not answer in time."""

    code = "unreachable"
    status = 503


# -- typed results ----------------------------------------------------------------


@dataclass(frozen=True)
class VerificationInfo:
    """A verification as the API shows it: the number masked, never the code."""

    id: str
    to: str  # masked, like +44******3456
    channel: Channel
    status: Status
    created_at: datetime
    expires_at: datetime
    resend_available_at: datetime
    attempts_remaining: int
    sends: int
    #: On a start or resend: "sent", or "unknown" when Twilio may have sent the
    #: message but its answer was lost (the code works if it arrives).
    delivery: str | None = None
    #: What the code is for; a transaction's amount (canonical), currency and payee.
    purpose: str = "login"
    amount: str | None = None
    currency: str | None = None
    payee: str | None = None

    @property
    def pending(self) -> bool:
        return self.status is Status.PENDING


@dataclass(frozen=True)
class CheckOutcome:
    """``valid`` is true only for the first correct check of a pending verification."""

    id: str
    status: Status
    valid: bool
    attempts_remaining: int


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _verification(data: dict[str, Any]) -> VerificationInfo:
    return VerificationInfo(
        id=str(data["id"]),
        to=str(data["to"]),
        channel=Channel(data["channel"]),
        status=Status(data["status"]),
        created_at=_time(data["created_at"]),
        expires_at=_time(data["expires_at"]),
        resend_available_at=_time(data["resend_available_at"]),
        attempts_remaining=int(data["attempts_remaining"]),
        sends=int(data["sends"]),
        delivery=data.get("delivery"),
        purpose=str(data.get("purpose") or "login"),
        amount=(data.get("amount") or {}).get("value"),
        currency=(data.get("amount") or {}).get("currency"),
        payee=data.get("payee"),
    )


def _check(data: dict[str, Any]) -> CheckOutcome:
    return CheckOutcome(
        id=str(data["id"]),
        status=Status(data["status"]),
        valid=data["valid"] is True,
        attempts_remaining=int(data["attempts_remaining"]),
    )


# -- errors -----------------------------------------------------------------------

_SIMPLE: dict[str, type[OtpguardError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        InvalidPhoneNumber,
        InvalidEmailAddress,
        Unauthorized,
        Forbidden,
        HttpsRequired,
        NotFound,
        StorageError,
        ChallengeUnavailable,
    )
}


def error_from_response(response: httpx.Response) -> OtpguardError:
    """The otpguard exception an error response stands for."""
    try:
        body = response.json()
        err = body["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        exc = OtpguardError(
            f"otpguard answered HTTP {response.status_code} without an otpguard error body "
            "(is the URL pointing at an otpguard server?)"
        )
        exc.code, exc.status = "bad_response", response.status_code
        return exc
    if code == RateLimited.code:
        retry_after = err.get("retry_after") or response.headers.get("retry-after") or 1
        return RateLimited(str(err.get("rule", "unknown")), float(retry_after), message)
    if code == DestinationRefused.code:
        return DestinationRefused(str(err.get("reason", "unknown")), message)
    if code == Conflict.code:
        return Conflict(str(err.get("reason", "unknown")), message)
    if code == ChallengeRequired.code:
        challenge = err.get("challenge")
        challenge = challenge if isinstance(challenge, dict) else {}
        scope = err.get("scope")
        return ChallengeRequired(
            {k: str(challenge.get(k, "")) for k in ("provider", "site_key")},
            reason=str(err.get("reason", "challenge_required")),
            scope=str(scope) if scope is not None else None,
            message=message,
        )
    if code == DeliveryError.code:
        provider_code = err.get("provider_code")
        return DeliveryFailed(
            str(err.get("reason", "provider_error")),
            message,
            provider_code=int(provider_code) if provider_code is not None else None,
        )
    cls = _SIMPLE.get(code)
    if cls is not None:
        return cls(message)
    exc = OtpguardError(message)  # a code this client does not know (a newer server)
    exc.code, exc.status = code, response.status_code
    return exc


def _unreachable(base_url: str, exc: httpx.TransportError) -> Unreachable:
    if isinstance(exc, httpx.ConnectTimeout):
        why = "the connection timed out"
    elif isinstance(exc, httpx.TimeoutException):
        why = "it did not answer in time"
    elif isinstance(exc, httpx.ConnectError):
        why = "the connection failed (is `otpguard serve` running there?)"
    else:
        why = f"the request failed ({type(exc).__name__})"
    return Unreachable(f"cannot reach otpguard at {base_url}: {why}")


# -- requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    json: dict[str, Any] | None
    parse: Callable[[dict[str, Any]], T]


def _path_id(verification_id: str) -> str:
    if not isinstance(verification_id, str) or not verification_id:
        raise InvalidRequest("a verification id is required")
    return quote(verification_id, safe="")


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class _Bound:
    """What a code is for: sent by a start, and again by its check."""

    purpose: str | None = None
    amount: str | None = None
    currency: str | None = None
    payee: str | None = None

    def fields(self) -> dict[str, Any]:
        if (self.amount is None) != (self.currency is None):
            raise InvalidRequest("give 'amount' and 'currency' together")
        amount = None
        if self.amount is not None:
            amount = {"value": self.amount, "currency": self.currency}
        return _drop_none(purpose=self.purpose, amount=amount, payee=self.payee)


def _start_call(
    to: str,
    channel: str | Channel,
    client_ip: str | None,
    locale: str | None,
    challenge_token: str | None = None,
    account_id: str | None = None,
    bound: _Bound = _Bound(),
) -> _Call[VerificationInfo]:
    ch = channel.value if isinstance(channel, Channel) else channel
    body = _drop_none(
        to=to,
        channel=ch,
        client_ip=client_ip,
        locale=locale,
        challenge_token=challenge_token,
        account_id=account_id,
    )
    return _Call("POST", "/v1/verifications", {**body, **bound.fields()}, _verification)


def _resend_call(verification_id: str, client_ip: str | None) -> _Call[VerificationInfo]:
    path = f"/v1/verifications/{_path_id(verification_id)}/resend"
    return _Call("POST", path, _drop_none(client_ip=client_ip), _verification)


def _check_call(
    verification_id: str | None,
    to: str | None,
    code: str,
    client_ip: str | None,
    bound: _Bound = _Bound(),
) -> _Call[CheckOutcome]:
    if (verification_id is None) == (to is None):
        raise InvalidRequest("give exactly one of 'id' or 'to'")
    body = _drop_none(id=verification_id, to=to, code=code, client_ip=client_ip)
    return _Call("POST", "/v1/verifications/check", {**body, **bound.fields()}, _check)


def _cancel_call(verification_id: str) -> _Call[VerificationInfo]:
    return _Call("POST", f"/v1/verifications/{_path_id(verification_id)}/cancel", {}, _verification)


def _get_call(verification_id: str) -> _Call[VerificationInfo]:
    return _Call("GET", f"/v1/verifications/{_path_id(verification_id)}", None, _verification)


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    url = (base_url or os.environ.get("OTPGUARD_URL") or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the otpguard URL must start with http:// or https://, not {url!r}")
    key = api_key or os.environ.get("OTPGUARD_API_KEY", "")
    if not key:
        raise ConfigError(
            "an API key is required: create one with `otpguard api-keys create --name my-app` "
            "and pass it as api_key= (or set OTPGUARD_API_KEY)"
        )
    return url, {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}


def _result(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise error_from_response(response)
    try:
        data = response.json()
        return call.parse(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise OtpguardError(
            f"otpguard answered {call.method} {call.path} with an unexpected body"
        ) from exc


# -- the clients ------------------------------------------------------------------


class Client:
    """Blocking client; thread-safe (one connection pool). Use ``with`` or call ``close()``.

    ``base_url`` defaults to ``$OTPGUARD_URL`` (else http://127.0.0.1:8000) and
    ``api_key`` to ``$OTPGUARD_API_KEY``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, headers = _settings(base_url, api_key)
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, json=call.json)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _result(call, response)

    def start(
        self,
        to: str,
        channel: str | Channel = Channel.SMS,
        *,
        client_ip: str | None = None,
        locale: str | None = None,
        challenge_token: str | None = None,
        account_id: str | None = None,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> VerificationInfo:
        """Send a code to ``to``. Pass your end user's IP as ``client_ip``. After a
        ``ChallengeRequired``, repeat the start with the CAPTCHA's ``challenge_token``.
        ``purpose`` (default login; for ``transaction`` also ``amount`` in
        ``currency`` and ``payee``) is bound into the code: its check names the same."""
        bound = _Bound(purpose, amount, currency, payee)
        call = _start_call(to, channel, client_ip, locale, challenge_token, account_id, bound)
        return self._send(call)

    def resend(self, verification_id: str, *, client_ip: str | None = None) -> VerificationInfo:
        """A fresh code; the previous one stops working. ``RateLimited("cooldown")`` if early."""
        return self._send(_resend_call(verification_id, client_ip))

    def check(
        self,
        verification_id: str | None = None,
        *,
        code: str,
        to: str | None = None,
        client_ip: str | None = None,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> CheckOutcome:
        """Check a typed code, by verification id or by number (its newest pending one),
        naming what the start named (another purpose, amount or payee: a wrong code)."""
        bound = _Bound(purpose, amount, currency, payee)
        return self._send(_check_call(verification_id, to, code, client_ip, bound))

    def cancel(self, verification_id: str) -> VerificationInfo:
        return self._send(_cancel_call(verification_id))

    def get(self, verification_id: str) -> VerificationInfo:
        return self._send(_get_call(verification_id))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """The same API for asyncio. Use ``async with`` or call ``await aclose()``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, headers = _settings(base_url, api_key)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, json=call.json)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _result(call, response)

    async def start(
        self,
        to: str,
        channel: str | Channel = Channel.SMS,
        *,
        client_ip: str | None = None,
        locale: str | None = None,
        challenge_token: str | None = None,
        account_id: str | None = None,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> VerificationInfo:
        """Send a code to ``to``. Pass your end user's IP as ``client_ip``. After a
        ``ChallengeRequired``, repeat the start with the CAPTCHA's ``challenge_token``.
        ``purpose`` (default login; for ``transaction`` also ``amount`` in
        ``currency`` and ``payee``) is bound into the code: its check names the same."""
        bound = _Bound(purpose, amount, currency, payee)
        call = _start_call(to, channel, client_ip, locale, challenge_token, account_id, bound)
        return await self._send(call)

    async def resend(
        self, verification_id: str, *, client_ip: str | None = None
    ) -> VerificationInfo:
        """A fresh code; the previous one stops working. ``RateLimited("cooldown")`` if early."""
        return await self._send(_resend_call(verification_id, client_ip))

    async def check(
        self,
        verification_id: str | None = None,
        *,
        code: str,
        to: str | None = None,
        client_ip: str | None = None,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> CheckOutcome:
        """Check a typed code, by verification id or by number (its newest pending one),
        naming what the start named (another purpose, amount or payee: a wrong code)."""
        bound = _Bound(purpose, amount, currency, payee)
        return await self._send(_check_call(verification_id, to, code, client_ip, bound))

    async def cancel(self, verification_id: str) -> VerificationInfo:
        return await self._send(_cancel_call(verification_id))

    async def get(self, verification_id: str) -> VerificationInfo:
        return await self._send(_get_call(verification_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
