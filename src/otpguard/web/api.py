"""The ``/v1`` JSON API: server-to-server, ``Authorization: Bearer <api key>``."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..apikeys import KeyCache, has_scope
from ..challenge import TOKEN_FIELD_MAX
from ..destinations import parse_destination
from ..errors import Forbidden, InvalidRequest, OtpguardError, StorageError
from ..events import mask_number
from ..models import StartArgs, Verification
from ..purpose import BoundArgs
from ..service import Verifier
from ..stores.base import ApiKey, EventQuery

router = APIRouter()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def number_hash_of(verifier: Verifier, number: str | None) -> tuple[str, ...] | None:
    """The keyed hashes events may be stored under, for a number (or an email address)
    as a caller writes it: one per listed key, newest first, so events from before a
    rotation are found; None for None. One that does not parse is ``InvalidRequest``."""
    if number is None:
        return None
    e164 = parse_destination(number, None, verifier.settings.default_region).e164
    return verifier.number_hashes(e164)


def event_query(
    types: tuple[str, ...],
    number_hash: str | tuple[str, ...] | None,
    country: str | None,
    since: float | None,
    until: float | None,
) -> EventQuery:
    """The filters the admin API's event listing and ``/v2``'s attempts share;
    ``country`` in either case."""
    country = country.upper() if country else None
    return EventQuery(
        types=types, number_hash=number_hash, country=country, since=since, until=until
    )


def verifier_of(request: Request) -> Verifier:
    v: Verifier = request.app.state.verifier
    return v


async def api_key(request: Request) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else None
    cache: KeyCache = request.app.state.key_cache
    key = await verifier_of(request).authenticate(presented, cache)
    request.state.api_key = key
    return key


def require(scope: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency: the request's API key, which must grant ``scope`` (else 403)."""

    async def scoped_key(request: Request) -> ApiKey:
        key = await api_key(request)
        if not has_scope(key, scope):
            raise Forbidden(f"this endpoint needs an API key with the {scope} scope")
        return key

    return scoped_key


verify_key = require("verify")
monitor_key = require("monitor")
admin_key = require("admin")

#: Every /v1 verification route: a key with the ``verify`` scope.
Auth = Annotated[ApiKey, Depends(verify_key)]


def tenant_of(key: ApiKey) -> str | None:
    """Whose verifications ``key`` may see: its own (a verification belongs to the key
    that started it), or every key's for an ``admin`` key (None: no restriction)."""
    return None if has_scope(key, "admin") else key.id


async def current_verifier(request: Request) -> Verifier:
    """``verifier_of`` as a dependency. Async on purpose: FastAPI runs a plain ``def``
    dependency in a worker thread, a hop that cost more than the request's work."""
    return verifier_of(request)


VerifierDep = Annotated[Verifier, Depends(current_verifier)]

# -- schemas --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AmountIn(_Strict):
    value: str = Field(
        max_length=32,
        description="A positive decimal string such as 25.00 (at most the currency's decimals)",
    )
    currency: str = Field(max_length=3, description="ISO 4217 code: EUR, GBP, USD, JPY, ...")


class _Bound(_Strict):
    """What a code is for; a check names the same as its start (docs/integrating.md,
    "Codes bound to a purpose")."""

    purpose: str | None = Field(
        None,
        max_length=32,
        description="login (the default), transaction, password_reset, signup or your own "
        "name (a-z 0-9 _)",
    )
    amount: AmountIn | None = Field(None, description="For a transaction: the amount to pay")
    payee: str | None = Field(
        None, max_length=256, description="For a transaction: who is paid (named in the message)"
    )

    def bound(self) -> BoundArgs:
        """The Verifier's ``purpose``, ``amount``, ``currency`` and ``payee`` arguments."""
        return {
            "purpose": self.purpose,
            "amount": self.amount.value if self.amount else None,
            "currency": self.amount.currency if self.amount else None,
            "payee": self.payee,
        }


class StartRequest(_Bound):
    to: str = Field(
        max_length=320,
        description="Phone number, E.164 preferred: +447400123456; for channel email, an "
        "address: jo@example.com",
    )
    channel: Literal["sms", "whatsapp", "voice", "email"] = "sms"
    client_ip: str | None = Field(
        None, max_length=64, description="Your end user's IP address (for rate limits)"
    )
    locale: str | None = Field(None, max_length=16, description="Message language: en, fr, ...")
    challenge_token: str | None = Field(
        None,
        min_length=1,
        max_length=TOKEN_FIELD_MAX,
        description="The CAPTCHA widget's token, when a start was answered 428 challenge_required",
    )
    account_id: str | None = Field(
        None, min_length=1, max_length=128, description="Your own id for the end user, if known"
    )

    def start_args(self) -> StartArgs:
        """The Verifier's ``start`` keywords that the request carries unchanged."""
        return {
            **self.bound(),
            "challenge_token": self.challenge_token,
            "account_id": self.account_id,
        }


class ResendRequest(_Strict):
    client_ip: str | None = Field(None, max_length=64)


class CheckRequest(_Bound):
    id: str | None = Field(None, max_length=64, description="The verification id")
    to: str | None = Field(
        None,
        max_length=320,
        description="Or the number (or email address): tries its newest pending "
        "verifications of this key; every failure by number is 404",
    )
    code: str = Field(max_length=32, description="The code the user typed")
    client_ip: str | None = Field(None, max_length=64)


class AmountOut(BaseModel):
    value: str = Field(description="In canonical form: exactly the currency's decimals")
    currency: str


class VerificationOut(BaseModel):
    id: str
    to: str = Field(description="The number or address, masked")
    channel: str
    status: str
    purpose: str = Field(description="What the code is for; its check must name the same")
    amount: AmountOut | None = None
    payee: str | None = None
    created_at: str
    expires_at: str
    resend_available_at: str
    attempts_remaining: int
    sends: int
    delivery: Literal["sent", "unknown"] | None = Field(
        None,
        description="On a start or resend: 'sent', or 'unknown' when the provider may have "
        "sent the message but its answer was lost; the code works if it arrives",
    )


class CheckOut(BaseModel):
    id: str
    status: str
    valid: bool
    attempts_remaining: int


class ErrorDetail(BaseModel):
    code: str
    message: str


class ChallengeOut(BaseModel):
    provider: str = Field(description="turnstile, hcaptcha or recaptcha")
    site_key: str = Field(description="The public key the widget is shown with")


class ChallengeDetail(ErrorDetail):
    reason: str = Field(description="challenge_required (no token) or challenge_failed")
    challenge: ChallengeOut
    scope: str | None = Field(None, description="What is under pressure, when it is known")


class ChallengeErrorOut(BaseModel):
    error: ChallengeDetail


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413, 422, 429, 502, 503)
}
START_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    428: {"model": ChallengeErrorOut, "description": "Show the CAPTCHA, then repeat the start"},
}


def out(verifier: Verifier, v: Verification) -> VerificationOut:
    return VerificationOut(
        id=v.id,
        to=mask_number(v.to),
        channel=v.channel.value,
        status=v.status.value,
        purpose=v.purpose,
        amount=AmountOut(value=v.amount, currency=v.currency) if v.amount and v.currency else None,
        payee=v.payee,
        created_at=iso(v.created_at),
        expires_at=iso(v.expires_at),
        resend_available_at=iso(v.resend_available_at),
        attempts_remaining=verifier.attempts_remaining(v),
        sends=v.sends,
        delivery=v.delivery,  # type: ignore[arg-type]  # the engine sets only "sent" or "unknown"
    )


# -- routes -----------------------------------------------------------------------


@router.post(
    "/v1/verifications", status_code=201, response_model=VerificationOut, responses=START_ERRORS
)
async def start_verification(
    body: StartRequest, verifier: VerifierDep, key: Auth
) -> VerificationOut:
    """Send a code to a number. The response never contains the code. A 428
    ``challenge_required`` asks for a CAPTCHA: repeat the start with ``challenge_token``."""
    v = await verifier.start(
        body.to,
        body.channel,
        client_ip=body.client_ip,
        locale=body.locale,
        owner=key.id,
        **body.start_args(),
    )
    return out(verifier, v)


@router.post("/v1/verifications/check", response_model=CheckOut, responses=ERRORS)
async def check_verification(body: CheckRequest, verifier: VerifierDep, key: Auth) -> CheckOut:
    """Check a code. ``valid`` is true only for the first correct check. Every failing
    check answers no sooner than ``failed_check_floor`` (the Verifier pads its own
    failures; the route pads what fails before the Verifier is asked)."""
    started = time.monotonic()
    try:
        if (body.id is None) == (body.to is None):
            raise InvalidRequest("give exactly one of 'id' or 'to'")
        r = await verifier.check(
            body.code,
            verification_id=body.id,
            to=body.to,
            client_ip=body.client_ip,
            started=started,
            owner=tenant_of(key),
            **body.bound(),
        )
    except OtpguardError:
        await verifier.pad_failed_check(started)
        raise
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
    verification_id: str, verifier: VerifierDep, key: Auth, body: ResendRequest | None = None
) -> VerificationOut:
    """Send a fresh code through the same channel; the previous code stops working."""
    v = await verifier.resend(
        verification_id, client_ip=body.client_ip if body else None, owner=tenant_of(key)
    )
    return out(verifier, v)


@router.get("/v1/verifications/{verification_id}", response_model=VerificationOut, responses=ERRORS)
async def get_verification(
    verification_id: str, verifier: VerifierDep, key: Auth
) -> VerificationOut:
    """Another key's verification is 404 (an ``admin`` key sees every key's)."""
    return out(verifier, await verifier.get(verification_id, owner=tenant_of(key)))


@router.post(
    "/v1/verifications/{verification_id}/cancel",
    response_model=VerificationOut,
    responses=ERRORS,
)
async def cancel_verification(
    verification_id: str, verifier: VerifierDep, key: Auth
) -> VerificationOut:
    return out(verifier, await verifier.cancel(verification_id, owner=tenant_of(key)))


@router.get("/v1/phone-numbers/{number}", responses=ERRORS)
async def explain_number(number: str, verifier: VerifierDep, _: Auth) -> JSONResponse:
    """The number's country, type and the destination decision for each channel."""
    return JSONResponse(await verifier.explain_number(number))


@router.get("/healthz", include_in_schema=True)
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorOut}})
async def readyz(verifier: VerifierDep) -> dict[str, str]:
    """The store is reachable. Anything else is 503 too: a probe reads "not ready",
    never a 500 (the error's type is logged, not its text)."""
    try:
        await verifier.health()
    except StorageError:
        raise
    except Exception as exc:
        logging.getLogger("otpguard.web").error(
            "readiness: store health check raised %s", type(exc).__name__
        )
        raise StorageError("the store is not ready") from exc
    return {"status": "ready"}
