"""Webhooks to the integrating app: which events, what they say, where they go.

Each API key may have one endpoint (``otpguard api-keys webhook set KEY_ID URL``
or ``PUT /v1/admin/webhooks/keys/{key_id}``), and so may each ``/v2`` service
(``otpguard webhooks set-service SID URL``, ``PUT /v1/admin/webhooks/services/{sid}``).
The events of a key's verifications become webhooks (:data:`NAMES`), posted by the
worker in ``webhook_delivery.py``, signed as ``webhook_signature.py`` says; those of
a verification started under a service that has an endpoint go there instead.

Which service: a ``/v2`` route names it for the events of its own request
(:data:`ROUTE`, set by ``web/verify/services.py``); any later event (an expiry seen
through ``/v1``, a delivery report) names it itself (``details["service"]``, from the
verification's row, ``Verification.service``), or, for a verification started
before rows named it, in the flag the /v2 API kept then (:data:`SERVICE_FLAG`).

A payload carries the event id, the webhook's name, the verification id, the
masked number, channel, country, status, reason and times. Never a code, never the
full number (the event model has neither), never the client's IP.

Signing secrets are not stored: an endpoint's is ``whsec_`` + hex of
``HMAC(keyring key, "webhook" | endpoint id)`` (``Keyring.derive``), with the key
the endpoint names (the newest when it was made). Adding a key to the keyring
changes nothing; once the endpoint's key leaves the keyring its webhooks fail with
``signing key retired`` until the endpoint is set again with ``--rotate-secret``.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .codes import Keyring
from .config import WebhooksSection
from .errors import InvalidRequest
from .events import Event, EventType
from .stores.webhooks import WebhookEndpoint, WebhookStore
from .webhook_signature import SECRET_PREFIX

MAX_URL = 2000
#: The flag (``Store.set_flag``) that named the /v2 service a verification was started
#: under, ``SERVICE_FLAG + verification id`` -> service SID, before its row did: no
#: longer written, read for the events of those verifications only.
SERVICE_FLAG = "verify_compat:verification:"
#: The scope whose endpoint takes the events of the current request before the key's:
#: a /v2 route sets its service's (and the app resets it for every request).
ROUTE: contextvars.ContextVar[str | None] = contextvars.ContextVar("webhook_route", default=None)
DELIVERED_STATUSES = frozenset({"delivered", "read"})
UNDELIVERED_STATUSES = frozenset({"failed", "undelivered", "canceled"})  # as service/base.py's

#: Webhook names, in a verification's life order.
NAMES = ("started", "sent", "delivered", "approved", "failed", "expired", "canceled", "refused")

_SIMPLE: dict[str, tuple[str, str | None]] = {
    EventType.STARTED: ("started", "pending"),
    EventType.SENT: ("sent", "pending"),
    EventType.RESENT: ("sent", "pending"),
    EventType.DELIVERY_FAILED: ("failed", "failed"),
    EventType.CHECK_PASSED: ("approved", "approved"),
    EventType.LOCKED: ("failed", "max_attempts_reached"),
    EventType.EXPIRED: ("expired", "expired"),
    EventType.CANCELED: ("canceled", "canceled"),
    EventType.REFUSED: ("refused", None),
}


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def service_scope(service_sid: str) -> str:
    return f"service:{service_sid}"


def webhook_for(event: Event) -> tuple[str, str | None] | None:
    """The webhook name and the verification's status an event stands for, or None."""
    if event.type == EventType.DELIVERY_STATUS:
        if event.reason in DELIVERED_STATUSES:
            return "delivered", "pending"
        if event.reason in UNDELIVERED_STATUSES:
            return "failed", "failed"
        return None  # queued, sent, ...: not a step of the verification's life
    return _SIMPLE.get(event.type)


def payload(event: Event, name: str, status: str | None) -> dict[str, Any]:
    """The JSON body of one webhook (keys sorted when encoded)."""
    out: dict[str, Any] = {
        "id": event.id,
        "type": name,
        "created_at": event.ts,
        "api_key": event.owner,
        "verification_id": event.verification_id,
        "to": event.number_masked,
        "channel": event.channel,
        "country": event.country,
        "status": status,
        "reason": event.reason,
    }
    if event.type == EventType.RESENT:
        out["resend"] = True
    if event.type == EventType.DELIVERY_FAILED and event.provider_code is not None:
        out["provider_code"] = event.provider_code
    if name == "refused":
        out["rule"] = event.rule
        retry = event.details.get("retry_after")
        if isinstance(retry, int | float):
            out["retry_after"] = retry
    return out


def encode(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def signing_secret(keyring: Keyring, endpoint: WebhookEndpoint) -> str | None:
    """The endpoint's ``whsec_...`` secret, or None when its key has left the keyring."""
    derived = keyring.derive("webhook", endpoint.id, endpoint.key_id)
    return None if derived is None else SECRET_PREFIX + derived[1].hex()


def check_url(url: str, *, production: bool, allow_private: bool) -> str:
    """A webhook URL, validated: https in production (http too in development), no
    credentials, and in production no loopback, private or link-local literal
    address or ``localhost`` unless ``allow_private`` (``OTPGUARD_WEBHOOK_ALLOW_PRIVATE``).
    Names are resolved and checked again at each delivery (``webhook_delivery``)."""
    url = (url or "").strip()
    if not url or len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise InvalidRequest(f"the webhook URL must be 1-{MAX_URL} printable characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidRequest("the webhook URL is not a valid URL") from None
    schemes = ("https",) if production else ("https", "http")
    if parts.scheme not in schemes:
        raise InvalidRequest(f"the webhook URL must start with {' or '.join(schemes)}://")
    if not parts.hostname:
        raise InvalidRequest("the webhook URL needs a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("the webhook URL must not carry credentials (user:pass@)")
    if production and not allow_private and not is_public_host(parts.hostname):
        raise InvalidRequest(
            "the webhook URL points to a loopback or private address; set "
            "OTPGUARD_WEBHOOK_ALLOW_PRIVATE=true to allow it in production"
        )
    return url


def is_public_host(host: str) -> bool:
    """False for ``localhost`` and any IP literal that is not globally routable."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return True  # a name: resolved and checked when delivering


@dataclass(frozen=True)
class EndpointSet:
    endpoint: WebhookEndpoint
    secret: str | None  # shown once: on creation or rotation; None when unchanged


async def set_endpoint(
    store: WebhookStore,
    keyring: Keyring,
    scope: str,
    url: str,
    now: float,
    section: WebhooksSection,
    *,
    rotate: bool = False,
) -> EndpointSet:
    """Create the scope's endpoint, or change its URL (the secret stays, unless
    ``rotate``: a new endpoint id, hence a new secret, and the newest key). The URL is
    checked against ``section`` (production, ``allow_private``)."""
    url = check_url(url, production=section.production, allow_private=section.allow_private)
    current = next((e for e in await store.list_webhook_endpoints() if e.scope == scope), None)
    if current is not None and not rotate and signing_secret(keyring, current) is not None:
        endpoint = WebhookEndpoint(current.id, scope, url, current.key_id, current.created_at)
        await store.put_webhook_endpoint(endpoint)
        return EndpointSet(endpoint, None)
    endpoint = WebhookEndpoint(
        "we_" + secrets.token_hex(8), scope, url, keyring.signing_key_id, now
    )
    await store.put_webhook_endpoint(endpoint)
    return EndpointSet(endpoint, signing_secret(keyring, endpoint))


def endpoint_out(e: WebhookEndpoint) -> dict[str, Any]:
    return {"id": e.id, "scope": e.scope, "url": e.url, "key_id": e.key_id,
            "created_at": e.created_at}  # fmt: skip
