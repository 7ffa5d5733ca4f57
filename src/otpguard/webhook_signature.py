"""Webhook signatures: what otpguard signs and what the receiving app checks.

Standard library only, so that the Python client (``otpguard.client.verify_webhook``)
and the server share one definition. Every POST carries::

    Otpguard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

where ``secret`` is the endpoint's whole ``whsec_...`` string as UTF-8 bytes and
``body`` the raw request body. The timestamp bounds a replay to ``tolerance``
seconds; the payload's ``id`` (the event id) lets the app drop a repeat within it.
Several ``v1=`` values may appear (each is tried).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

HEADER = "Otpguard-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
DEFAULT_TOLERANCE = 300


class WebhookSignatureError(ValueError):
    """The body, header or secret do not match, or the timestamp is too old or new."""


def _mac(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_webhook(body: bytes, secret: str, t: int) -> str:
    """The ``Otpguard-Signature`` header value for ``body`` signed at ``t``."""
    return f"t={t},v1={_mac(secret, t, body)}"


def verify_webhook(
    body: bytes | str,
    header: str | None,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook's signature and age; return its decoded JSON payload.

    ``body``: the raw request body, exactly as received (not re-encoded JSON);
    ``header``: the ``Otpguard-Signature`` header; ``secret``: the endpoint's
    ``whsec_...`` secret. Raises :class:`WebhookSignatureError`."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookSignatureError(f"the secret must be the {SECRET_PREFIX}... string")
    t: int | None = None
    signatures: list[str] = []
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            t = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if t is None or not signatures:
        raise WebhookSignatureError(f"no t= and v1= in the {HEADER} header")
    current = time.time() if now is None else now
    if abs(current - t) > tolerance:
        raise WebhookSignatureError("the signature's timestamp is outside the tolerance")
    expected = _mac(secret, t, raw)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise WebhookSignatureError("the signature does not match")
    payload: dict[str, Any] = json.loads(raw)
    return payload
