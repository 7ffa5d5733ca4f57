"""Deliver codes through Twilio: SMS and WhatsApp (Messages API) and voice (Calls API).

The official SDK builds every request (path, form encoding, auth) and sends it
with its aiohttp client. Two things are ours:

* **Where requests go.** ``twilio_api_base`` replaces the base URL of the SDK's
  ``api`` domain (``Domain.base_url``), so tests and proxies get the SDK's own
  requests at another host.
* **How long and how often.** The whole ``send`` is bounded by
  ``twilio_timeout`` (connect attempts by ``twilio_connect_timeout``). Only a
  request that provably never reached Twilio is retried, once, within that
  budget: the connection was never established (refused, unreachable, TLS
  handshake failed, connect timeout). Once the request may have been written,
  nothing is retried, since Twilio may have sent that message: a dropped
  connection, a response that never comes or does not parse, and any 5xx
  answer are ``DeliveryError(reason="unknown_outcome")`` (``outcome_unknown``
  true), and a 4xx answer (20429 included) is Twilio's refusal, not retried.

Twilio echoes the message body (the code) in its responses. Nothing here logs
or keeps a response, a body or TwiML: only the resource SID and status leave
this module, and the SDK's HTTP logger is held at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from ..config import Settings
from ..errors import UNKNOWN_OUTCOME, DeliveryError
from ..models import PHONE_CHANNELS, Channel
from .base import Message, Receipt, Transport
from .errors import TWILIO_REASONS

log = logging.getLogger("otpguard.transports.twilio")

# The SDK logs each request and response line at INFO. It does not log bodies
# today; holding its logger at WARNING keeps it that way whatever a later SDK
# version or a DEBUG root logger would do.
_sdk_log = logging.getLogger("otpguard.transports.twilio.sdk")
_sdk_log.setLevel(logging.WARNING)

#: Where Twilio posts delivery status; the web router serves this path.
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"

#: Twilio error code -> DeliveryError.reason (shared with the status callbacks).
ERROR_REASONS = TWILIO_REASONS
_VALIDITY_MAX = 36000  # Twilio accepts ValidityPeriod 1..36000 seconds
_CALL_TIME_LIMIT = 60  # seconds; reading a code twice takes well under a minute

# Voice: what <Say> reads, by locale; {digits} is the code as "1, 2, 3, ...".
VOICE_TEMPLATES: dict[str, str] = {
    "en": "Your {service} code is: {digits}.",
    "es": "Su código de {service} es: {digits}.",
    "fr": "Votre code {service} est : {digits}.",
    "de": "Ihr {service}-Code lautet: {digits}.",
}
# A transaction code's call names the amount and the payee, as its SMS does.
VOICE_TRANSACTION_TEMPLATES: dict[str, str] = {
    "en": "Your {service} code to pay {amount} to {payee} is: {digits}.",
    "es": "Su código de {service} para pagar {amount} a {payee} es: {digits}.",
    "fr": "Votre code {service} pour payer {amount} à {payee} est : {digits}.",
    "de": "Ihr {service}-Code für die Zahlung von {amount} an {payee} lautet: {digits}.",
}
_VOICE_LANGUAGES = {"es": "es-ES", "fr": "fr-FR", "de": "de-DE"}
_EN_US_COUNTRIES = frozenset({"US", "CA", "PR", "VI", "GU", "AS", "MP", "UM"})


def voice_language(locale: str, country: str | None) -> str:
    """The ``<Say language=...>`` for a locale: English follows the number's country."""
    if locale in _VOICE_LANGUAGES:
        return _VOICE_LANGUAGES[locale]
    return "en-US" if (country or "").upper() in _EN_US_COUNTRIES else "en-GB"


def voice_twiml(message: Message) -> str:
    """TwiML that reads the code digit by digit, twice, with a pause between."""
    locale = message.locale if message.locale in VOICE_TEMPLATES else "en"
    digits = ", ".join(message.code)
    if message.amount is not None and message.payee is not None:
        text = VOICE_TRANSACTION_TEMPLATES[locale].format(
            service=message.service_name, digits=digits, amount=message.amount, payee=message.payee
        )
    else:
        text = VOICE_TEMPLATES[locale].format(service=message.service_name, digits=digits)
    language = voice_language(locale, message.country)
    response = VoiceResponse()
    response.say(text, voice="alice", language=language)
    response.pause(length=1)
    response.say(text, voice="alice", language=language)
    return str(response)


def _whatsapp_address(number: str) -> str:
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


def status_callback_url(public_url: str, verification_id: str) -> str:
    """The StatusCallback URL Twilio will post to (and that its signature covers)."""
    return f"{public_url.rstrip('/')}{STATUS_CALLBACK_PATH}?vid={quote(verification_id, safe='')}"


class _QuietAsyncHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client, minus its memory of the last request and response.

    ``AsyncTwilioHttpClient`` keeps both on ``_test_only_last_*``; they hold the
    body and Twilio's echo of it, so they are cleared after every request.
    """

    def __init__(
        self, *, connect_timeout: float, max_connections: int, logger: logging.Logger
    ) -> None:
        super().__init__(pool_connections=False, logger=logger)
        # pool_connections=False leaves no session; ours carries the connect timeout and
        # the connection limit (aiohttp's default of 100 silently queued the rest).
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(connect=connect_timeout, sock_connect=connect_timeout),
            connector=aiohttp.TCPConnector(limit=max_connections),
        )

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:
            # aiohttp 3.14 deprecates the BasicAuth object the SDK would build from
            # ``auth``; the same header, encoded the way aiohttp now recommends.
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        try:
            return await super().request(
                method, url, params, data, headers, None, timeout, allow_redirects
            )
        finally:
            self._test_only_last_request = None
            self._test_only_last_response = None


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    """Map the SDK's and aiohttp's exceptions to DeliveryError, once, at the boundary."""
    try:
        yield
    except (TwilioRestException, TwilioServiceException) as exc:
        raise _rest_error(exc) from exc
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        # No connection, so no request: Twilio cannot have sent anything.
        raise DeliveryError(
            "network_error",
            f"could not connect to Twilio ({type(exc).__name__})",
            retryable=True,
        ) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # Connected: the request may have been written and the message sent.
        raise DeliveryError(
            UNKNOWN_OUTCOME,
            f"no answer from Twilio ({type(exc).__name__}); the message may have been sent",
        ) from exc
    except (TwilioException, ValueError, KeyError, TypeError):
        # A response that does not parse (its text may be Twilio's echo: not chained).
        raise DeliveryError(
            UNKNOWN_OUTCOME, "unexpected response from Twilio; the message may have been sent"
        ) from None


def _rest_error(exc: TwilioException) -> DeliveryError:
    status = int(getattr(exc, "status", 0) or 0)
    raw = str(getattr(exc, "code", "") or "")
    # Without a Twilio code in the body the SDK repeats the HTTP status as the code.
    code = int(raw) if raw.isascii() and raw.isdigit() and int(raw) >= 1000 else None
    reason = ERROR_REASONS.get(code, "provider_error") if code is not None else "provider_error"
    what = f"error {code}" if code is not None else "an error"
    if status >= 500:
        # A server error after the request was read: Twilio (or a proxy in front of
        # it) may have created the message before failing. Not retried.
        reason = UNKNOWN_OUTCOME
    # Twilio's own message is left out: it can quote the number or the request.
    return DeliveryError(reason, f"Twilio returned {what} (HTTP {status})", provider_code=code)


class TwilioTransport(Transport):
    """Send codes with the Twilio REST API through the official SDK."""

    name = "twilio"
    channels = PHONE_CHANNELS
    #: Seconds to wait before the one retry.
    retry_backoff: float = 0.2

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reaches_real_phones = not settings.twilio_test_credentials
        self._client: Client | None = None
        self._http: _QuietAsyncHttpClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioTransport:
        return cls(settings)

    def __repr__(self) -> str:
        return f"TwilioTransport(base={self.settings.twilio_api_base!r})"

    # -- configuration ------------------------------------------------------

    def problems(self, channels: Iterable[Channel] = PHONE_CHANNELS) -> list[str]:
        """What is missing or wrong for sending on ``channels`` (empty when ready)."""
        s = self.settings
        out: list[str] = []
        if not s.twilio_account_sid:
            out.append("OTPGUARD_TWILIO_ACCOUNT_SID (or TWILIO_ACCOUNT_SID) is not set")
        if s.twilio_api_key or s.twilio_api_secret.get_secret_value():
            if not (s.twilio_api_key and s.twilio_api_secret.get_secret_value()):
                out.append(
                    "set both OTPGUARD_TWILIO_API_KEY and OTPGUARD_TWILIO_API_SECRET "
                    "(or neither, to use the auth token)"
                )
        elif not s.twilio_auth_token.get_secret_value():
            out.append(
                "no Twilio credentials: set OTPGUARD_TWILIO_AUTH_TOKEN (or TWILIO_AUTH_TOKEN), "
                "or an API key pair OTPGUARD_TWILIO_API_KEY/OTPGUARD_TWILIO_API_SECRET"
            )
        parts = urlsplit(s.twilio_api_base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            out.append(
                f"OTPGUARD_TWILIO_API_BASE={s.twilio_api_base!r} is not a URL like "
                "https://api.twilio.com"
            )
        wanted = set(channels)
        if Channel.SMS in wanted and not (s.twilio_from or s.twilio_messaging_service_sid):
            out.append(
                "SMS needs a sender: set OTPGUARD_TWILIO_FROM or "
                "OTPGUARD_TWILIO_MESSAGING_SERVICE_SID"
            )
        if Channel.WHATSAPP in wanted:
            if not s.twilio_whatsapp_content_sid:
                out.append(
                    "WhatsApp needs an approved template: set OTPGUARD_TWILIO_WHATSAPP_CONTENT_SID "
                    "(an HX... content SID whose variable {{1}} is the code)"
                )
            if not (s.twilio_whatsapp_from or s.twilio_from or s.twilio_messaging_service_sid):
                out.append(
                    "WhatsApp needs a sender: set OTPGUARD_TWILIO_WHATSAPP_FROM, "
                    "OTPGUARD_TWILIO_FROM or OTPGUARD_TWILIO_MESSAGING_SERVICE_SID"
                )
        if Channel.VOICE in wanted and not s.twilio_from:
            out.append("voice calls need a caller number: set OTPGUARD_TWILIO_FROM")
        return out

    def _get_client(self) -> Client:
        if self._client is None:
            s = self.settings
            if s.twilio_api_key:
                username, password = s.twilio_api_key, s.twilio_api_secret.get_secret_value()
            else:
                username, password = s.twilio_account_sid, s.twilio_auth_token.get_secret_value()
            if not (s.twilio_account_sid and username and password):
                raise DeliveryError("not_configured", "Twilio credentials are not configured")
            self._http = _QuietAsyncHttpClient(
                connect_timeout=s.twilio_connect_timeout,
                max_connections=s.twilio_max_connections,
                logger=_sdk_log,
            )
            client = Client(
                username, password, account_sid=s.twilio_account_sid, http_client=self._http
            )
            # The base URL comes from twilio_api_base alone: a TWILIO_EDGE or
            # TWILIO_REGION in the environment would rewrite its host name.
            client.edge = None
            client.region = None
            client.api.base_url = s.twilio_api_base.rstrip("/")
            self._client = client
        return self._client

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None

    # -- sending ----------------------------------------------------------------

    async def send(self, message: Message) -> Receipt:
        if message.channel not in PHONE_CHANNELS:
            raise DeliveryError("not_configured", f"twilio does not send {message.channel.value}")
        if message.channel is Channel.WHATSAPP:
            create = self._whatsapp(message)
        elif message.channel is Channel.VOICE:
            create = self._voice(message)
        else:
            create = self._sms(message)
        resource = await self._with_retry(create, message)
        sid = str(getattr(resource, "sid", "") or "") or None
        status = str(getattr(resource, "status", "") or "queued")
        del resource  # Twilio's echo of the body goes no further
        log.info(
            "twilio accepted %s for verification %s: %s (%s)",
            message.channel.value,
            message.verification_id,
            sid,
            status,
        )
        return Receipt(provider="twilio", provider_id=sid, status=status)

    def _common(self, message: Message) -> dict[str, Any]:
        params: dict[str, Any] = {
            "validity_period": min(max(1, message.ttl_seconds), _VALIDITY_MAX)
        }
        if self.settings.public_url:
            params["status_callback"] = status_callback_url(
                self.settings.public_url, message.verification_id
            )
        return params

    def _sms(self, message: Message) -> Callable[[], Awaitable[Any]]:
        s = self.settings
        params = self._common(message)
        if s.twilio_messaging_service_sid:
            params["messaging_service_sid"] = s.twilio_messaging_service_sid
        elif s.twilio_from:
            params["from_"] = s.twilio_from
        else:
            raise DeliveryError("not_configured", "no Twilio SMS sender is configured")
        client = self._get_client()

        async def create() -> Any:
            return await client.messages.create_async(
                to=message.to, body=message.render_text(), **params
            )

        return create

    def _whatsapp(self, message: Message) -> Callable[[], Awaitable[Any]]:
        s = self.settings
        if not s.twilio_whatsapp_content_sid:
            raise DeliveryError(
                "whatsapp_not_configured",
                "WhatsApp needs OTPGUARD_TWILIO_WHATSAPP_CONTENT_SID (an approved template)",
            )
        params = self._common(message)
        # A dedicated WhatsApp sender first; then, as for SMS, the messaging service
        # (whose pool may hold the WhatsApp sender); then the SMS number.
        if s.twilio_whatsapp_from:
            params["from_"] = _whatsapp_address(s.twilio_whatsapp_from)
        elif s.twilio_messaging_service_sid:
            params["messaging_service_sid"] = s.twilio_messaging_service_sid
        elif s.twilio_from:
            params["from_"] = _whatsapp_address(s.twilio_from)
        else:
            raise DeliveryError("whatsapp_not_configured", "no WhatsApp sender is configured")
        client = self._get_client()

        async def create() -> Any:
            return await client.messages.create_async(
                to=f"whatsapp:{message.to}",
                content_sid=s.twilio_whatsapp_content_sid,
                content_variables=json.dumps({"1": message.code}),
                **params,
            )

        return create

    def _voice(self, message: Message) -> Callable[[], Awaitable[Any]]:
        s = self.settings
        if not s.twilio_from:
            raise DeliveryError("not_configured", "voice calls need OTPGUARD_TWILIO_FROM")
        params: dict[str, Any] = {"time_limit": _CALL_TIME_LIMIT}
        if s.public_url:
            params["status_callback"] = status_callback_url(s.public_url, message.verification_id)
        client = self._get_client()

        async def create() -> Any:
            return await client.calls.create_async(
                to=message.to, from_=s.twilio_from, twiml=voice_twiml(message), **params
            )

        return create

    async def _with_retry(self, create: Callable[[], Awaitable[Any]], message: Message) -> Any:
        """At most two attempts, both inside one ``twilio_timeout`` budget; the second
        only when the first never connected (``retryable``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.twilio_timeout
        for attempt in (1, 2):
            try:
                with _translate():
                    async with asyncio.timeout_at(deadline):
                        return await create()
            except DeliveryError as exc:
                left = deadline - loop.time()
                if attempt == 2 or not exc.retryable or left <= self.retry_backoff:
                    log.warning(
                        "twilio %s failed for verification %s: %s",
                        message.channel.value,
                        message.verification_id,
                        exc.message,
                    )
                    raise
                log.info(
                    "twilio %s for verification %s: %s; retrying once",
                    message.channel.value,
                    message.verification_id,
                    exc.message,
                )
            await asyncio.sleep(self.retry_backoff)
        raise AssertionError("unreachable")  # pragma: no cover
