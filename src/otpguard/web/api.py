"""The ``/v1`` JSON API: server-to-server, ``Authorization: Bearer <api key>``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..apikeys import KeyCache
from ..errors import Forbidden, InvalidRequest, StorageError
from ..events import mask_number
from ..models import Verification
from ..service import Verifier
from ..stores.base import ApiKey

router = APIRouter()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def verifier_of(request: Request) -> Verifier:
    v: Verifier = request.app.state.verifier
    return v


async def api_key(request: Request) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else None
    cache: KeyCache = request.app.state.key_cache
    key = await cache.authenticate(verifier_of(request).store, presented)
    request.state.api_key = key
    return key


async def admin_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    if "admin" not in key.scopes:
        raise Forbidden("this endpoint needs an API key with the admin scope")
    return key


Auth = Annotated[ApiKey, Depends(api_key)]


async def engine_of(request: Request) -> Verifier:
    """``verifier_of`` as a dependency. Async on purpose: FastAPI runs a plain ``def``
    dependency in a worker thread, a hop that cost more than the request's work."""
    return verifier_of(request)


Engine = Annotated[Verifier, Depends(engine_of)]

# -- schemas --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StartRequest(_Strict):
    to: str = Field(max_length=64, description="Phone number, E.164 preferred: +447400123456")
    channel: Literal["sms", "whatsapp", "voice"] = "sms"
    client_ip: str | None = Field(
        None, max_length=64, description="Your end user's IP address (for rate limits)"
    )
    locale: str | None = Field(None, max_length=16, description="Message language: en, fr, ...")


class ResendRequest(_Strict):
    client_ip: str | None = Field(None, max_length=64)


class CheckRequest(_Strict):
    id: str | None = Field(None, max_length=64, description="The verification id")
    to: str | None = Field(
        None, max_length=64, description="Or the number: checks its newest pending verification"
    )
    code: str = Field(max_length=32, description="The code the user typed")
    client_ip: str | None = Field(None, max_length=64)


class VerificationOut(BaseModel):
    id: str
    to: str = Field(description="The number, masked")
    channel: str
    status: str
    created_at: str
    expires_at: str
    resend_available_at: str
    attempts_remaining: int
    sends: int


class CheckOut(BaseModel):
    id: str
    status: str
    valid: bool
    attempts_remaining: int


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413, 422, 429, 502, 503)
}


def out(engine: Verifier, v: Verification) -> VerificationOut:
    return VerificationOut(
        id=v.id,
        to=mask_number(v.to),
        channel=v.channel.value,
        status=v.status.value,
        created_at=iso(v.created_at),
        expires_at=iso(v.expires_at),
        resend_available_at=iso(v.resend_available_at),
        attempts_remaining=engine.attempts_remaining(v),
        sends=v.sends,
    )


# -- routes -----------------------------------------------------------------------


@router.post("/v1/verifications", status_code=201, response_model=VerificationOut, responses=ERRORS)
async def start_verification(body: StartRequest, engine: Engine, _: Auth) -> VerificationOut:
    """Send a code to a number. The response never contains the code."""
    v = await engine.start(body.to, body.channel, client_ip=body.client_ip, locale=body.locale)
    return out(engine, v)


@router.post("/v1/verifications/check", response_model=CheckOut, responses=ERRORS)
async def check_verification(body: CheckRequest, engine: Engine, _: Auth) -> CheckOut:
    """Check a code. ``valid`` is true only for the first correct check."""
    if (body.id is None) == (body.to is None):
        raise InvalidRequest("give exactly one of 'id' or 'to'")
    r = await engine.check(body.code, verification_id=body.id, to=body.to, client_ip=body.client_ip)
    return CheckOut(
        id=r.verification.id,
        status=r.status.value,
        valid=r.valid,
        attempts_remaining=r.attempts_remaining,
    )


@router.post(
    "/v1/verifications/{verification_id}/resend",
    response_model=VerificationOut,
    responses=ERRORS,
)
async def resend_verification(
    verification_id: str, engine: Engine, _: Auth, body: ResendRequest | None = None
) -> VerificationOut:
    """Send a fresh code through the same channel; the previous code stops working."""
    v = await engine.resend(verification_id, client_ip=body.client_ip if body else None)
    return out(engine, v)


@router.get("/v1/verifications/{verification_id}", response_model=VerificationOut, responses=ERRORS)
async def get_verification(verification_id: str, engine: Engine, _: Auth) -> VerificationOut:
    return out(engine, await engine.get(verification_id))


@router.post(
    "/v1/verifications/{verification_id}/cancel",
    response_model=VerificationOut,
    responses=ERRORS,
)
async def cancel_verification(verification_id: str, engine: Engine, _: Auth) -> VerificationOut:
    return out(engine, await engine.cancel(verification_id))


@router.get("/v1/phone-numbers/{number}", responses=ERRORS)
async def explain_number(number: str, engine: Engine, _: Auth) -> JSONResponse:
    """The number's country, type and the destination decision for each channel."""
    return JSONResponse(await engine.explain_number(number))


@router.get("/healthz", include_in_schema=True)
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorOut}})
async def readyz(engine: Engine) -> dict[str, str]:
    """The store is reachable. Anything else is 503 too: a probe reads "not ready",
    never a 500 (the error's type is logged, not its text)."""
    try:
        await engine.store.health()
    except StorageError:
        raise
    except Exception as exc:
        logging.getLogger("otpguard.web").error(
            "readiness: store health check raised %s", type(exc).__name__
        )
        raise StorageError("the store is not ready") from exc
    return {"status": "ready"}
