"""Email codes through SendGrid's v3 Mail Send API (the provider behind Twilio
Verify's email channel), with ``httpx``.

``POST {OTPGUARD_EMAIL_SENDGRID_API_BASE}/v3/mail/send`` with ``Authorization:
Bearer <key>`` and a JSON body of ``personalizations`` (one recipient), ``from``
(``OTPGUARD_EMAIL_FROM``, the service name as its name), ``subject`` and
``content`` (``text/plain`` then ``text/html``). Open and click tracking are
switched off for the message: open tracking would add a remote image, click
tracking rewrite links. SendGrid answers ``202 Accepted`` with the message's id
in ``X-Message-Id``.

Errors are translated once: no connection means nothing was sent (retryable);
a 4xx refusal means nothing was sent (401/403: the key is wrong); a 5xx or a
request written without a whole answer is an unknown outcome. SendGrid's error
bodies can quote the request, so none of it reaches an error or a log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx

from ..config import EmailSection
from ..errors import UNKNOWN_OUTCOME, DeliveryError
from ..models import Channel
from .base import Message, Receipt, Transport
from .email_message import render

log = logging.getLogger("otpguard.transports.sendgrid")

MAIL_SEND_PATH = "/v3/mail/send"


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise DeliveryError(
            "network_error",
            f"could not connect to SendGrid ({type(exc).__name__})",
            retryable=True,
        ) from None
    except httpx.HTTPError as exc:
        raise DeliveryError(
            UNKNOWN_OUTCOME,
            f"no answer from SendGrid ({type(exc).__name__}); the message may have been sent",
        ) from None


def mail_send_body(message: Message, sender: str) -> dict[str, Any]:
    """The Mail Send request for one code."""
    content = render(message)
    return {
        "personalizations": [{"to": [{"email": message.to}]}],
        "from": {"email": sender, "name": message.service_name},
        "subject": content.subject,
        "content": [
            {"type": "text/plain", "value": content.text},
            {"type": "text/html", "value": content.html},
        ],
        "tracking_settings": {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
        },
        "custom_args": {"verification_id": message.verification_id},
    }


class SendGridTransport(Transport):
    name = "sendgrid"
    reaches_real_phones = True  # real mailboxes
    channels = frozenset({Channel.EMAIL})

    def __init__(self, section: EmailSection, client: httpx.AsyncClient | None = None) -> None:
        self.account = section.sendgrid
        self.sender = section.from_
        self.url = self.account.api_base.rstrip("/") + MAIL_SEND_PATH
        self._client = client

    def problems(self) -> list[str]:
        out = []
        if not self.account.api_key.get_secret_value():
            out.append("OTPGUARD_EMAIL_SENDGRID_API_KEY is not set")
        if not self.account.api_base.startswith(("https://", "http://")):
            out.append("OTPGUARD_EMAIL_SENDGRID_API_BASE must be an http(s) URL")
        return out

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = self.account.timeout
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=3.0))
        return self._client

    async def send(self, message: Message) -> Receipt:
        key = self.account.api_key.get_secret_value()
        with _translate():
            response = await self._http().post(
                self.url,
                json=mail_send_body(message, self.sender),
                headers={"Authorization": f"Bearer {key}"},
            )
        status = response.status_code
        if status == 202:
            provider_id = response.headers.get("X-Message-Id", "")[:64] or None
            log.info("sendgrid accepted email for verification %s", message.verification_id)
            return Receipt(provider="sendgrid", provider_id=provider_id)
        if status in (401, 403):
            raise DeliveryError(
                "not_configured", f"SendGrid refused the API key (HTTP {status})",
                provider_code=status,
            )  # fmt: skip
        if status >= 500:
            raise DeliveryError(
                UNKNOWN_OUTCOME,
                f"SendGrid failed (HTTP {status}); the message may have been sent",
                provider_code=status,
            )
        raise DeliveryError(
            "provider_error", f"SendGrid refused the message (HTTP {status})",
            provider_code=status, retryable=status == 429,
        )  # fmt: skip

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
