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

The transport takes the Twilio section (``settings.twilio``). Beside it:
``twilio_sdk.py`` (the SDK's HTTP client without its memory of requests, and its
errors translated once) and ``twilio_voice.py`` (what a call says).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from twilio.rest import Client

from ..errors import DeliveryError
from ..models import PHONE_CHANNELS, Channel
from .base import Message, Receipt, Transport
from .twilio_sdk import ERROR_REASONS, QuietAsyncHttpClient, sdk_log, translate_errors
from .twilio_voice import VOICE_TEMPLATES, voice_language, voice_twiml

if TYPE_CHECKING:
    from ..config import TwilioSection

__all__ = [
    "ERROR_REASONS",
    "STATUS_CALLBACK_PATH",
    "VOICE_TEMPLATES",
    "TwilioTransport",
    "status_callback_url",
    "voice_language",
    "voice_twiml",
]

log = logging.getLogger("otpguard.transports.twilio")

#: Where Twilio posts delivery status; the web router serves this path.
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"

_VALIDITY_MAX = 36000  # Twilio accepts ValidityPeriod 1..36000 seconds
_CALL_TIME_LIMIT = 60  # seconds; reading a code twice takes well under a minute


def _whatsapp_address(number: str) -> str:
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


def status_callback_url(public_url: str, verification_id: str) -> str:
    """The StatusCallback URL Twilio will post to (and that its signature covers)."""
    return f"{public_url.rstrip('/')}{STATUS_CALLBACK_PATH}?vid={quote(verification_id, safe='')}"


class TwilioTransport(Transport):
    """Send codes with the Twilio REST API through the official SDK."""

    name = "twilio"
    channels = PHONE_CHANNELS
    #: Seconds to wait before the one retry.
    retry_backoff: float = 0.2

    def __init__(self, section: TwilioSection) -> None:
        self.section = section
        self.reaches_real_phones = not section.test_credentials
        self._client: Client | None = None
        self._http: QuietAsyncHttpClient | None = None

    def __repr__(self) -> str:
        return f"TwilioTransport(base={self.section.api_base!r})"

    # -- configuration ------------------------------------------------------

    def problems(self, channels: Iterable[Channel] = PHONE_CHANNELS) -> list[str]:
        """What is missing or wrong for sending on ``channels`` (empty when ready)."""
        s = self.section
        out: list[str] = []
        if not s.account_sid:
            out.append("OTPGUARD_TWILIO_ACCOUNT_SID (or TWILIO_ACCOUNT_SID) is not set")
        if s.api_key or s.api_secret.get_secret_value():
            if not (s.api_key and s.api_secret.get_secret_value()):
                out.append(
                    "set both OTPGUARD_TWILIO_API_KEY and OTPGUARD_TWILIO_API_SECRET "
                    "(or neither, to use the auth token)"
                )
        elif not s.auth_token.get_secret_value():
            out.append(
                "no Twilio credentials: set OTPGUARD_TWILIO_AUTH_TOKEN (or TWILIO_AUTH_TOKEN), "
                "or an API key pair OTPGUARD_TWILIO_API_KEY/OTPGUARD_TWILIO_API_SECRET"
            )
        parts = urlsplit(s.api_base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            out.append(
                f"OTPGUARD_TWILIO_API_BASE={s.api_base!r} is not a URL like https://api.twilio.com"
            )
        wanted = set(channels)
        if Channel.SMS in wanted and not (s.from_ or s.messaging_service_sid):
            out.append(
                "SMS needs a sender: set OTPGUARD_TWILIO_FROM or "
                "OTPGUARD_TWILIO_MESSAGING_SERVICE_SID"
            )
        if Channel.WHATSAPP in wanted:
            if not s.whatsapp_content_sid:
                out.append(
                    "WhatsApp needs an approved template: set OTPGUARD_TWILIO_WHATSAPP_CONTENT_SID "
                    "(an HX... content SID whose variable {{1}} is the code)"
                )
            if not (s.whatsapp_from or s.from_ or s.messaging_service_sid):
                out.append(
                    "WhatsApp needs a sender: set OTPGUARD_TWILIO_WHATSAPP_FROM, "
                    "OTPGUARD_TWILIO_FROM or OTPGUARD_TWILIO_MESSAGING_SERVICE_SID"
                )
        if Channel.VOICE in wanted and not s.from_:
            out.append("voice calls need a caller number: set OTPGUARD_TWILIO_FROM")
        return out

    def _get_client(self) -> Client:
        if self._client is None:
            s = self.section
            if s.api_key:
                username, password = s.api_key, s.api_secret.get_secret_value()
            else:
                username, password = s.account_sid, s.auth_token.get_secret_value()
            if not (s.account_sid and username and password):
                raise DeliveryError("not_configured", "Twilio credentials are not configured")
            self._http = QuietAsyncHttpClient(
                connect_timeout=s.connect_timeout,
                max_connections=s.max_connections,
                logger=sdk_log,
            )
            client = Client(username, password, account_sid=s.account_sid, http_client=self._http)
            # The base URL comes from twilio_api_base alone: a TWILIO_EDGE or
            # TWILIO_REGION in the environment would rewrite its host name.
            client.edge = None
            client.region = None
            client.api.base_url = s.api_base.rstrip("/")
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
        if self.section.public_url:
            params["status_callback"] = status_callback_url(
                self.section.public_url, message.verification_id
            )
        return params

    def _sms(self, message: Message) -> Callable[[], Awaitable[Any]]:
        s = self.section
        params = self._common(message)
        if s.messaging_service_sid:
            params["messaging_service_sid"] = s.messaging_service_sid
        elif s.from_:
            params["from_"] = s.from_
        else:
            raise DeliveryError("not_configured", "no Twilio SMS sender is configured")
        client = self._get_client()

        async def create() -> Any:
            return await client.messages.create_async(
                to=message.to, body=message.render_text(), **params
            )

        return create

    def _whatsapp(self, message: Message) -> Callable[[], Awaitable[Any]]:
        s = self.section
        if not s.whatsapp_content_sid:
            raise DeliveryError(
                "whatsapp_not_configured",
                "WhatsApp needs OTPGUARD_TWILIO_WHATSAPP_CONTENT_SID (an approved template)",
            )
        params = self._common(message)
        # A dedicated WhatsApp sender first; then, as for SMS, the messaging service
        # (whose pool may hold the WhatsApp sender); then the SMS number.
        if s.whatsapp_from:
            params["from_"] = _whatsapp_address(s.whatsapp_from)
        elif s.messaging_service_sid:
            params["messaging_service_sid"] = s.messaging_service_sid
        elif s.from_:
            params["from_"] = _whatsapp_address(s.from_)
        else:
            raise DeliveryError("whatsapp_not_configured", "no WhatsApp sender is configured")
        client = self._get_client()

        async def create() -> Any:
            return await client.messages.create_async(
                to=f"whatsapp:{message.to}",
                content_sid=s.whatsapp_content_sid,
                content_variables=json.dumps({"1": message.code}),
                **params,
            )

        return create

    def _voice(self, message: Message) -> Callable[[], Awaitable[Any]]:
        s = self.section
        if not s.from_:
            raise DeliveryError("not_configured", "voice calls need OTPGUARD_TWILIO_FROM")
        params: dict[str, Any] = {"time_limit": _CALL_TIME_LIMIT}
        if s.public_url:
            params["status_callback"] = status_callback_url(s.public_url, message.verification_id)
        client = self._get_client()

        async def create() -> Any:
            return await client.calls.create_async(
                to=message.to, from_=s.from_, twiml=voice_twiml(message), **params
            )

        return create

    async def _with_retry(self, create: Callable[[], Awaitable[Any]], message: Message) -> Any:
        """At most two attempts, both inside one ``twilio_timeout`` budget; the second
        only when the first never connected (``retryable``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.section.timeout
        for attempt in (1, 2):
            try:
                with translate_errors():
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
