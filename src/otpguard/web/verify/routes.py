"""/v2 services and verifications: create, fetch, update, delete, cancel."""

from __future__ import annotations

import secrets
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ...errors import InvalidEmailAddress, InvalidPhoneNumber, InvalidRequest
from ...models import Status, Verification
from ...transports.base import SMS_TEMPLATES
from . import sending
from .errors import TwilioRoute, invalid, not_found
from .forms import (
    CHANNELS,
    NAME_RULE,
    account_sid,
    code_length,
    friendly_name,
    name_is_safe,
    psd2,
    read_form,
    required,
)
from .paging import page_body, page_request
from .services import (
    AuthDep,
    ServiceCall,
    ServiceDep,
    VerifyService,
    list_services,
    owned,
    save_service,
)
from .shapes import service_out, verification_out

router = APIRouter(route_class=TwilioRoute, include_in_schema=False)

# What otpguard always does, accepted when asked for and refused when asked against:
# every message says not to share the code, and landlines never get an SMS.
_ALWAYS = {"DoNotShareWarningEnabled": "true", "SkipSmsToLandlines": "true"}
_SERVICE_FIELDS = frozenset({"FriendlyName", "CodeLength", *_ALWAYS})
_START_FIELDS = frozenset(
    {"To", "Channel", "Locale", "CustomFriendlyName", "DeviceIp", "Amount", "Payee"}
)
_UPDATE_FIELDS = frozenset({"Status"})


async def _service_form(request: Request) -> dict[str, str]:
    form = await read_form(request, _SERVICE_FIELDS)
    for name, value in _ALWAYS.items():
        if name in form and form[name].lower() != value:
            raise invalid(name, f"otpguard always behaves as {name}={value}")
    return form


@router.get("/Services")
async def list_all_services(request: Request, who: AuthDep) -> Response:
    """The key's services, oldest first, in Twilio's pages."""
    req = page_request(request, frozenset())
    services = await list_services(who.verifier, account_sid(who.key))
    start = req.page * req.size
    items = [service_out(request, svc) for svc in services[start : start + req.size]]
    has_next = start + req.size < len(services)
    return JSONResponse(page_body(request, "services", items, req, None, has_next))


@router.post("/Services")
async def create_service(request: Request, who: AuthDep) -> Response:
    verifier = who.verifier
    form = await _service_form(request)
    required(form, "FriendlyName")
    length = form.get("CodeLength")
    now = verifier.clock()
    svc = VerifyService(
        sid="VA" + secrets.token_hex(16),
        account_sid=account_sid(who.key),
        friendly_name=friendly_name(form, "FriendlyName"),
        code_length=verifier.settings.code_length if length is None else code_length(length),
        created_at=now,
        updated_at=now,
    )
    await save_service(verifier, svc)  # over the cap: 60200, nothing saved
    return JSONResponse(service_out(request, svc), status_code=201)


@router.get("/Services/{service_sid}")
async def fetch_service(request: Request, call: ServiceDep) -> Response:
    return JSONResponse(service_out(request, call.service))


@router.post("/Services/{service_sid}")
async def update_service(request: Request, call: ServiceDep) -> Response:
    form = await _service_form(request)
    changes: dict[str, Any] = {"updated_at": call.verifier.clock()}
    if "FriendlyName" in form:
        changes["friendly_name"] = friendly_name(form, "FriendlyName")
    if "CodeLength" in form:
        changes["code_length"] = code_length(form["CodeLength"])
    svc = VerifyService(**{**asdict(call.service), **changes})
    await save_service(call.verifier, svc)
    return JSONResponse(service_out(request, svc))


@router.delete("/Services/{service_sid}")
async def delete_service(call: ServiceDep) -> Response:
    await call.verifier.delete_service(call.service.sid)
    return Response(status_code=204)


@router.post("/Services/{service_sid}/Verifications")
async def create_verification(request: Request, call: ServiceDep) -> Response:
    svc = call.service
    form = await read_form(request, _START_FIELDS)
    to = required(form, "To")
    channel = CHANNELS.get(required(form, "Channel"))
    if channel is None:
        raise invalid("Channel", "otpguard sends sms, whatsapp, call and email")
    locale = _locale(form.get("Locale") or None)
    name = friendly_name(form, "CustomFriendlyName") if "CustomFriendlyName" in form else None
    if name is None and not name_is_safe(svc.friendly_name):
        # A service saved before names were restricted: its name no longer goes out.
        raise invalid("FriendlyName", f"update the service's FriendlyName: {NAME_RULE}")
    device_ip = form.get("DeviceIp") or None
    bound = psd2(form)
    try:
        v = await sending.send(
            call,
            to,
            channel,
            device_ip=device_ip,
            locale=locale,
            name=name or svc.friendly_name,
            bound=bound,
        )
    except InvalidRequest as exc:
        if isinstance(exc, InvalidPhoneNumber | InvalidEmailAddress):
            raise
        raise invalid(
            "DeviceIp" if "client_ip" in exc.message else "request", exc.message
        ) from None
    return await _verification(request, call, v, status_code=201)


def _locale(raw: str | None) -> str | None:
    """A language otpguard has messages in (``en``), or one of its regions (``en-GB``)."""
    if raw is None:
        return None
    lang, _, region = raw.replace("_", "-").partition("-")
    if lang not in SMS_TEMPLATES or not (
        region == "" or (len(region) == 2 and region.isascii() and region.isalpha())
    ):
        languages = ", ".join(sorted(SMS_TEMPLATES))
        raise invalid("Locale", f"otpguard sends messages in {languages} (or xx-YY of them)")
    return raw


@router.get("/Services/{service_sid}/Verifications/{verification_sid}")
async def fetch_verification(request: Request, call: ServiceDep, verification_sid: str) -> Response:
    return await _verification(request, call, await owned(request, call, verification_sid))


@router.post("/Services/{service_sid}/Verifications/{verification_sid}")
async def update_verification(
    request: Request, call: ServiceDep, verification_sid: str
) -> Response:
    verifier = call.verifier
    v = await owned(request, call, verification_sid)
    form = await read_form(request, _UPDATE_FIELDS)
    status = required(form, "Status")
    if status == "approved":
        raise invalid(
            "Status",
            "otpguard approves only with the right code; out-of-band approval is not supported",
        )
    if status != "canceled":
        raise invalid("Status", "only canceled is supported")
    if v.status is not Status.PENDING:
        raise not_found(request)  # Twilio: a finished verification is gone
    return await _verification(request, call, await verifier.cancel(v.id, owner=call.tenant))


async def _verification(
    request: Request, call: ServiceCall, v: Verification, status_code: int = 200
) -> Response:
    sends = await sending.send_times(call.verifier, v)
    body = verification_out(request, call.verifier, call.service, call.key, v, sends)
    return JSONResponse(body, status_code=status_code)
