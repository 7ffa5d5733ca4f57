"""``/demo``: a two-step phone (or email) login page, in development mode only.

Enter a number or an address, then the code (read from the console transport's output, or the
file outbox). It walks the real Verifier end to end and shows what an end user
should see:

* refusals are generic: a blocked number, a rate limit, a fraud rule and a
  delivery failure all read "We couldn't send a code to that number", with the
  same status, so the page is no oracle for which numbers are blocked or hot;
  only a malformed number is named as such (that reveals nothing);
* the resend button waits out the cooldown; a countdown shows the expiry;
* when a start needs a CAPTCHA (``OTPGUARD_CHALLENGE_*``), the endpoint answers 428
  ``challenge_required`` with the provider and site key, and the page shows the
  challenge step, then repeats the start with the token. The page loads nothing
  from another site, so it does not load the provider's widget script: it shows
  the widget's container and, clearly labelled, a field for a token (in
  development, one from the provider's test keys or a self-hosted siteverify).

The browser-facing endpoints (``POST /demo/api/start``, ``/demo/api/resend``,
``/demo/api/check``) call the Verifier in-process, without an API key, so they
exist only when ``env`` is ``development``: in production nothing here is
routed (404). They are rate-limited by the normal limits, with the
browser's address (``request.client.host``, already resolved through trusted
proxies by ``otpguard.web.https``) as ``client_ip``. Cross-site requests are
refused, and bodies must be JSON (which a cross-site form cannot send).

The page, its script and its stylesheet are package files (``web/static/demo.*``)
served under ``/demo`` and ``/static/demo``: no CDN, no inline script or style,
so the page CSP (``script-src 'self'; style-src 'self'``) holds.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..challenge import TOKEN_FIELD_MAX
from ..errors import (
    ChallengeRequired,
    Conflict,
    Forbidden,
    InvalidPhoneNumber,
    InvalidRequest,
    NotFound,
    OtpguardError,
    RateLimited,
)
from ..events import mask_number
from ..models import Status, Verification
from ..service import Verifier
from .api import verifier_of

log = logging.getLogger("otpguard.demo")

# What an end user reads. Kept here, in one place, so the docs can quote them.
MSG_INVALID_NUMBER = "Enter a valid mobile number, like 07400 123456 or +44 7400 123456."
MSG_NOT_SENT = "We couldn't send a code to that number. Check it, or try again later."
MSG_INVALID_ADDRESS = "Enter a valid email address, like you@example.com."
MSG_NOT_SENT_EMAIL = "We couldn't send a code to that address. Check it, or try again later."
MSG_WRONG_CODE = "That code isn't right."
MSG_MALFORMED_CODE = "Enter the {n}-digit code from the message."
MSG_NO_LONGER_VALID = "This code can no longer be used. Ask for a new one."
MSG_WAIT = "You can ask for a new code in {s} s."
MSG_CHALLENGE = "Please confirm you're not a robot, then we'll send the code."
MSG_CHALLENGE_FAILED = "That check didn't pass. Please try it again."

_ASSETS = {  # served under /static/demo/
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
}


def _asset(name: str) -> bytes:
    return resources.files("otpguard.web").joinpath("static", name).read_bytes()


# -- request bodies ----------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StartBody(_Strict):
    to: str = Field(max_length=320)
    channel: Literal["sms", "whatsapp", "voice", "email"] = "sms"
    challenge_token: str | None = Field(None, min_length=1, max_length=TOKEN_FIELD_MAX)


class ResendBody(_Strict):
    id: str = Field(max_length=64)


class CheckBody(_Strict):
    id: str = Field(max_length=64)
    code: str = Field(max_length=32)


# -- helpers -----------------------------------------------------------------------


async def same_origin(request: Request) -> None:
    """Browser endpoints without credentials still refuse cross-site requests."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("cross-site requests are refused")
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise Forbidden("cross-site requests are refused")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InvalidRequest("the body must be JSON (Content-Type: application/json)")


SameOrigin = Annotated[None, Depends(same_origin)]


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


def _refusal(code: str, message: str, **extra: object) -> JSONResponse:
    # One status for every refusal so the status line tells no more than the message.
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=400)


def _sent(verifier: Verifier, v: Verification) -> dict[str, object]:
    now = verifier.clock()
    return {
        "id": v.id,
        "to": mask_number(v.to),
        "channel": v.channel.value,
        "code_length": v.code_length,
        "expires_in": max(0, round(v.expires_at - now)),
        "resend_in": max(0, round(v.resend_available_at - now)),
    }


# -- routes ------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


@router.get("/demo")
async def page() -> HTMLResponse:
    return HTMLResponse(_asset("demo.html"))


@router.get("/static/demo/{name}")
async def asset(name: str) -> Response:
    if name not in _ASSETS:
        raise NotFound("no such file")
    return Response(_asset(name), media_type=_ASSETS[name])


@router.post("/demo/api/start")
async def start(body: StartBody, request: Request, _: SameOrigin) -> JSONResponse:
    verifier = verifier_of(request)
    try:
        v = await verifier.start(
            body.to, body.channel, client_ip=_peer(request), challenge_token=body.challenge_token
        )
    except InvalidRequest:  # InvalidPhoneNumber included: only the input's shape is named
        email = body.channel == "email"
        return _refusal("invalid_number", MSG_INVALID_ADDRESS if email else MSG_INVALID_NUMBER)
    except ChallengeRequired as exc:  # a step to take, not a refusal: its own status
        failed = exc.reason == "challenge_failed"
        error = {
            "code": exc.code,
            "reason": exc.reason,
            "message": MSG_CHALLENGE_FAILED if failed else MSG_CHALLENGE,
            "challenge": exc.challenge,
        }
        return JSONResponse({"error": error}, status_code=exc.status)
    except OtpguardError:  # blocked, rate-limited, fraud, delivery, storage: all alike
        # (the Verifier records each refusal as an event, with its reason)
        return _refusal("not_sent", MSG_NOT_SENT_EMAIL if body.channel == "email" else MSG_NOT_SENT)
    return JSONResponse(_sent(verifier, v))


@router.post("/demo/api/resend")
async def resend(body: ResendBody, request: Request, _: SameOrigin) -> JSONResponse:
    verifier = verifier_of(request)
    try:
        v = await verifier.resend(body.id, client_ip=_peer(request))
    except RateLimited as exc:
        if exc.rule == "cooldown":  # about this verification only: safe to say
            return _refusal("wait", MSG_WAIT.format(s=exc.retry_after), resend_in=exc.retry_after)
        return _refusal("not_sent", MSG_NOT_SENT)
    except (Conflict, NotFound):
        return _refusal("no_longer_valid", MSG_NO_LONGER_VALID)
    except OtpguardError:  # recorded by the Verifier as an event, like a start's
        return _refusal("not_sent", MSG_NOT_SENT)
    return JSONResponse(_sent(verifier, v))


@router.post("/demo/api/check")
async def check(body: CheckBody, request: Request, _: SameOrigin) -> JSONResponse:
    verifier = verifier_of(request)
    try:
        result = await verifier.check(body.code, verification_id=body.id, client_ip=_peer(request))
    except InvalidPhoneNumber:
        return _refusal("no_longer_valid", MSG_NO_LONGER_VALID)
    except InvalidRequest:
        n = verifier.settings.code_length
        return _refusal("malformed_code", MSG_MALFORMED_CODE.format(n=n))
    except OtpguardError as exc:  # not found, rate-limited, storage
        log.info("demo: check refused (%s)", type(exc).__name__)
        return _refusal("no_longer_valid", MSG_NO_LONGER_VALID)
    if result.valid:
        return JSONResponse({"signed_in": True, "to": mask_number(result.verification.to)})
    if result.status is Status.PENDING:
        left = result.attempts_remaining
        message = f"{MSG_WRONG_CODE} {left} attempt{'s' if left != 1 else ''} left."
        return _refusal("wrong_code", message, attempts_remaining=left)
    return _refusal("no_longer_valid", MSG_NO_LONGER_VALID)


def install(app: FastAPI) -> None:
    """The ``create_app`` extension hook: routes in development, nothing in production."""
    if app.state.settings.production:
        return
    app.include_router(router)
