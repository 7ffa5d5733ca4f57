"""Twilio delivery status callbacks: ``POST /webhooks/twilio/status?vid=<verification id>``.

Twilio signs each callback with the account's auth token (``X-Twilio-Signature``:
HMAC-SHA1 over the URL it called plus the sorted POST fields). The URL is
rebuilt from ``public_url``, never from the request's Host or scheme, so the
check holds behind a proxy and a forged Host header cannot change it.

A signature proves Twilio sent the callback once, not that it is fresh: a
captured callback could be posted again. So a report counts only for a message
otpguard sent for that verification, within ``DELIVERY_REPORT_WINDOW`` of the send,
and once per (message, status) (:meth:`otpguard.service.Verifier.record_delivery_status`);
anything else is acknowledged (204) and ignored.

The endpoint is off (404) unless both ``public_url`` and ``twilio_auth_token``
are set: the transport only asks for callbacks when ``public_url`` is set, and
without the auth token no signature can be checked (an API key pair does not
sign callbacks).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import MultiDict
from twilio.request_validator import RequestValidator

from ..config import Settings
from ..errors import NotFound
from ..service import DeliveryReport
from ..transports.twilio import STATUS_CALLBACK_PATH
from .api import verifier_of

log = logging.getLogger("otpguard.web.twilio")

router = APIRouter(include_in_schema=False)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _field(form: MultiDict, *names: str) -> str | None:
    """The first of ``names`` present and non-empty in the form."""
    for name in names:
        value = form.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _error_code(raw: str | None) -> int | None:
    raw = (raw or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


@router.post(STATUS_CALLBACK_PATH)
async def twilio_status(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    token = settings.twilio_auth_token.get_secret_value()
    if not (settings.public_url and token):
        return _error(404, "not_found", "Not Found")

    # Twilio posts application/x-www-form-urlencoded; parsed here so that no
    # multipart parser is needed.
    body = (await request.body()).decode("utf-8", errors="replace")
    form = MultiDict(parse_qsl(body, keep_blank_values=True))
    query = request.url.query
    url = settings.public_url.rstrip("/") + STATUS_CALLBACK_PATH + (f"?{query}" if query else "")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(token).validate(url, form, signature):
        log.warning("twilio status callback refused: missing or wrong X-Twilio-Signature")
        return _error(403, "forbidden", "missing or invalid X-Twilio-Signature")

    verification_id = request.query_params.get("vid", "")
    status = _field(form, "MessageStatus", "CallStatus")
    if not verification_id or status is None:
        return _error(400, "invalid_request", "expected ?vid= and MessageStatus or CallStatus")
    try:
        outcome = await verifier_of(request).record_delivery_status(
            verification_id=verification_id,
            status=status,
            error_code=_error_code(_field(form, "ErrorCode")),
            provider_id=_field(form, "MessageSid", "CallSid"),
        )
    except NotFound:
        outcome = DeliveryReport.UNKNOWN_MESSAGE
    if outcome is not DeliveryReport.RECORDED:
        # A replay, a report on a message otpguard did not send for this verification
        # (or whose verification was purged), or one too late: acknowledged, ignored.
        log.info("twilio status callback ignored: %s", outcome.value)
    return Response(status_code=204)
