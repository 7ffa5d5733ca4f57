"""/v2 VerificationCheck: a code with To or VerificationSid.

Every failing check (no pending code for To, another service's verification,
locked, malformed, wrong code) answers no sooner than ``failed_check_floor`` after
the request was authenticated: the time tells none of them apart. That is why
the check route loads its service through :func:`check_call`, which pads a
failure to load it too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ...destinations import parse_destination
from ...errors import (
    InvalidEmailAddress,
    InvalidPhoneNumber,
    InvalidRequest,
    NotFound,
    OtpguardError,
)
from ...limits import UNKNOWN_IP
from ...models import Status, Verification
from ...purpose import Binding
from . import sending
from .errors import MAX_CHECK_ATTEMPTS, TwilioError, TwilioRoute, invalid, not_found
from .forms import psd2, read_form, required
from .services import AuthDep, ServiceCall, in_service, load_service, owned
from .shapes import check_out

router = APIRouter(route_class=TwilioRoute, include_in_schema=False)

_CHECK_FIELDS = frozenset({"Code", "To", "VerificationSid", "Amount", "Payee"})


@dataclass(frozen=True)
class CheckCall(ServiceCall):
    started: float  # time.monotonic() once the request was authenticated


async def check_call(request: Request, service_sid: str, who: AuthDep) -> CheckCall:
    started = time.monotonic()
    try:
        svc = await load_service(request, who.verifier, service_sid, who.key)
    except TwilioError:
        await who.verifier.pad_failed_check(started)
        raise
    return CheckCall(who.verifier, who.key, svc, started)


@router.post("/Services/{service_sid}/VerificationCheck")
async def check_verification(
    request: Request, call: Annotated[CheckCall, Depends(check_call)]
) -> Response:
    try:
        response, valid = await _check(request, call)
    except (TwilioError, OtpguardError):
        await call.verifier.pad_failed_check(call.started)
        raise
    if not valid:
        await call.verifier.pad_failed_check(call.started)
    return response


async def _check(request: Request, call: CheckCall) -> tuple[Response, bool]:
    verifier, svc, key = call.verifier, call.service, call.key
    form = await read_form(request, _CHECK_FIELDS)
    code = required(form, "Code")
    if not (code.isascii() and code.isdigit() and 6 <= len(code) <= 10):
        raise invalid("Code", "6 to 10 digits")
    if ("To" in form) == ("VerificationSid" in form):
        raise invalid("To", "give exactly one of To or VerificationSid")
    bound = psd2(form)
    if "To" in form:
        return await _check_number(call, code, form["To"], bound)
    before = await owned(request, call, form["VerificationSid"])
    vid = before.id
    if before.status is Status.MAX_ATTEMPTS_REACHED:
        raise TwilioError(MAX_CHECK_ATTEMPTS, 429, "Max check attempts reached")
    if before.status is not Status.PENDING:
        raise not_found(request)
    try:
        # Twilio's check carries no end-user IP: count wrong codes against the IP
        # that started the verification (DeviceIp), not a bucket shared by all.
        ip = before.client_ip if before.client_ip not in (None, UNKNOWN_IP) else None
        result = await verifier.check(
            code,
            verification_id=vid,
            client_ip=ip,
            started=call.started,
            owner=call.tenant,
            **bound.args(),
        )
    except InvalidRequest as exc:
        raise invalid("Code", exc.message) from None
    if result.valid or result.status in (Status.PENDING, Status.MAX_ATTEMPTS_REACHED):
        # A wrong code: 200 with status pending (or max_attempts_reached on the
        # check that used the last attempt), as Twilio answers.
        v = result.verification.with_(status=result.status)
        return JSONResponse(check_out(svc, key, v, result.valid)), result.valid
    raise not_found(request)  # approved, canceled or expired in the meantime


async def _check_number(
    call: CheckCall, code: str, to: str, bound: Binding
) -> tuple[Response, bool]:
    """A check by To: the number's newest pending verifications of this service, newest
    first (one, unless the number has pending ones on several channels). Every failure
    (no pending code, wrong code, a code of another length) is the same 20404, counted
    under the per-number cap: unlike Twilio's, the answer does not say whether the
    number has a pending verification. Once the number's verification is locked
    (max_attempts_reached, until it expires) it is Twilio's 60202."""
    verifier, svc = call.verifier, call.service
    try:
        parse_destination(to, None, verifier.settings.default_region)
    except (InvalidPhoneNumber, InvalidEmailAddress) as exc:
        raise invalid("To", exc.message) from None

    async def mine(candidates: list[Verification]) -> list[Verification]:
        return await in_service(verifier, svc.sid, candidates)

    try:
        # Twilio's check carries no end-user IP: only the per-number cap applies.
        result = await verifier.check(
            code,
            to=to,
            started=call.started,
            owner=call.tenant,
            select=mine,
            per_ip=False,
            **bound.args(),
        )
    except InvalidRequest as exc:
        raise invalid("Code", exc.message) from None
    except NotFound:
        latest = await sending.current(call, to)
        if latest is not None and latest.status is Status.MAX_ATTEMPTS_REACHED:
            raise TwilioError(MAX_CHECK_ATTEMPTS, 429, "Max check attempts reached") from None
        raise
    return JSONResponse(check_out(svc, call.key, result.verification, True)), True
