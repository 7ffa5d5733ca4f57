"""Twilio's error shape, and otpguard's errors translated into it once.

Errors are ``{"code", "message", "more_info", "status"}``: each /v2 route catches
every error itself (:class:`TwilioRoute`), so the app-wide ``{"error": {...}}``
handlers stay untouched. Messages never hold a code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ... import errors as core

log = logging.getLogger("otpguard.web.verify")

INVALID_PARAMETER = 60200
MAX_CHECK_ATTEMPTS = 60202
MAX_SEND_ATTEMPTS = 60203
PSD2_REQUIRED = 60206
LANDLINE = 60205
FRAUD_BLOCKED = 60410
GEO_BLOCKED = 60605
AUTHENTICATE = 20003
FORBIDDEN = 20403
NOT_FOUND = 20404
METHOD_NOT_ALLOWED = 20004
INTERNAL = 20500
UNAVAILABLE = 20503

CHALLENGE = {"WWW-Authenticate": 'Basic realm="otpguard"'}


class TwilioError(Exception):
    """An error as Twilio sends it: a numeric code, its HTTP status, a message."""

    def __init__(
        self, code: int, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid(param: str, why: str = "") -> TwilioError:
    return TwilioError(
        INVALID_PARAMETER, 400, f"Invalid parameter: {param}" + (f" ({why})" if why else "")
    )


def not_found(request: Request) -> TwilioError:
    path = request.url.path.removeprefix("/v2")
    return TwilioError(NOT_FOUND, 404, f"The requested resource {path} was not found")


def unauthenticated() -> TwilioError:
    return TwilioError(AUTHENTICATE, 401, "Authenticate", CHALLENGE)


def refused(reason: str) -> TwilioError:
    """otpguard's destination refusal reasons -> Twilio's closest Verify error (all 403)."""
    if reason == "number_type:fixed_line":
        return TwilioError(LANDLINE, 403, "SMS is not supported by landline phone number")
    if reason.startswith("fraud:"):
        return TwilioError(FRAUD_BLOCKED, 403, f"Verification delivery attempt blocked ({reason})")
    # country_not_allowed, blocklisted, premium_rate, shared_cost, other number
    # types, undeliverable, development_guard: refused by the destination policy.
    return TwilioError(GEO_BLOCKED, 403, f"Verification delivery attempt blocked ({reason})")


def translate(exc: core.OtpguardError, request: Request, *, checking: bool = False) -> TwilioError:
    """One otpguard error -> one Twilio error; messages never hold a code."""
    if isinstance(exc, core.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
        if checking:
            return TwilioError(MAX_CHECK_ATTEMPTS, 429, "Max check attempts reached", headers)
        return TwilioError(MAX_SEND_ATTEMPTS, 429, "Max send attempts reached", headers)
    if isinstance(exc, core.DestinationRefused):
        return refused(exc.reason)
    if isinstance(exc, core.ChallengeRequired):
        # Twilio's API has no CAPTCHA step and no parameter for a token: the closest
        # Verify error is Fraud Guard's "delivery attempt blocked" (nothing was sent).
        return TwilioError(FRAUD_BLOCKED, 403, "Verification delivery attempt blocked (challenge)")
    if isinstance(exc, core.ChallengeUnavailable):
        return TwilioError(UNAVAILABLE, 503, "Service unavailable")
    if isinstance(exc, core.InvalidPhoneNumber | core.InvalidEmailAddress):
        return invalid("To", exc.message)
    if isinstance(exc, core.InvalidRequest):
        return invalid("Code" if checking else "request", exc.message)
    if isinstance(exc, core.Unauthorized):
        return unauthenticated()
    if isinstance(exc, core.Forbidden):
        return TwilioError(FORBIDDEN, 403, exc.message)
    if isinstance(exc, core.NotFound | core.Conflict):
        # Twilio deletes a verification once it is approved, canceled or expired;
        # acting on one answers 404, and so does otpguard.
        return not_found(request)
    if isinstance(exc, core.DeliveryError):
        if exc.reason == "invalid_number":
            return invalid("To", "the provider refused the number")
        if exc.reason == "not_sms_capable":
            return TwilioError(LANDLINE, 403, "SMS is not supported by landline phone number")
        return TwilioError(INTERNAL, 502, f"Delivery failed ({exc.reason})")
    if isinstance(exc, core.StorageError):
        return TwilioError(UNAVAILABLE, 503, "Service unavailable")
    return TwilioError(INTERNAL, 500, "Internal error")


class TwilioRoute(APIRoute):
    """Every error raised in a /v2 route (or its dependencies) leaves Twilio-shaped."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except TwilioError as exc:
                return exc.response()
            except core.OtpguardError as exc:
                checking = request.url.path.endswith("/VerificationCheck")
                return translate(exc, request, checking=checking).response()
            except Exception as exc:  # never a stack trace, never a code
                log.error("unexpected error: %s", type(exc).__name__)
                return TwilioError(INTERNAL, 500, "Internal error").response()

        return run
