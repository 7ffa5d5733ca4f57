"""/v2 services and verifications: create, fetch, update, delete, cancel."""

from __future__ import annotations

import secrets
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ...errors import InvalidPhoneNumber, InvalidRequest
from ...models import Status
from ...service import VERIFICATION_GRACE
from .errors import TwilioRoute, invalid, not_found
from .forms import (
    CHANNELS,
    NAME_RULE,
    account_sid,
    code_length,
    friendly_name,
    name_is_safe,
    read_form,
    required,
)
from .services import (
    OWNER_KEY,
    SERVICE_KEY,
    AuthDep,
    ServiceDep,
    VerifyService,
    owned,
    save_service,
)
from .shapes import service_out, verification_out

router = APIRouter(route_class=TwilioRoute, include_in_schema=False)

_SERVICE_FIELDS = frozenset({"FriendlyName", "CodeLength"})
_START_FIELDS = frozenset({"To", "Channel", "Locale", "CustomFriendlyName", "DeviceIp"})
_UPDATE_FIELDS = frozenset({"Status"})


@router.post("/Services")
async def create_service(request: Request, who: AuthDep) -> Response:
    engine = who.engine
    form = await read_form(request, _SERVICE_FIELDS)
    required(form, "FriendlyName")
    length = form.get("CodeLength")
    now = engine.clock()
    svc = VerifyService(
        sid="VA" + secrets.token_hex(16),
        account_sid=account_sid(who.key),
        friendly_name=friendly_name(form, "FriendlyName"),
        code_length=engine.settings.code_length if length is None else code_length(length),
        created_at=now,
        updated_at=now,
    )
    await save_service(engine, svc)
    return JSONResponse(service_out(request, svc), status_code=201)


@router.get("/Services/{service_sid}")
async def fetch_service(request: Request, call: ServiceDep) -> Response:
    return JSONResponse(service_out(request, call.service))


@router.post("/Services/{service_sid}")
async def update_service(request: Request, call: ServiceDep) -> Response:
    form = await read_form(request, _SERVICE_FIELDS)
    changes: dict[str, Any] = {"updated_at": call.engine.clock()}
    if "FriendlyName" in form:
        changes["friendly_name"] = friendly_name(form, "FriendlyName")
    if "CodeLength" in form:
        changes["code_length"] = code_length(form["CodeLength"])
    svc = VerifyService(**{**asdict(call.service), **changes})
    await save_service(call.engine, svc)
    return JSONResponse(service_out(request, svc))


@router.delete("/Services/{service_sid}")
async def delete_service(call: ServiceDep) -> Response:
    svc, engine = call.service, call.engine
    # A flag whose time has passed reads as absent and is purged.
    await engine.store.set_flag(SERVICE_KEY + svc.sid, svc.to_json(), engine.clock())
    return Response(status_code=204)


@router.post("/Services/{service_sid}/Verifications")
async def create_verification(request: Request, call: ServiceDep) -> Response:
    engine, svc, key = call.engine, call.service, call.key
    form = await read_form(request, _START_FIELDS)
    to = required(form, "To")
    channel = CHANNELS.get(required(form, "Channel"))
    if channel is None:
        raise invalid("Channel", "otpguard sends sms, whatsapp and call")
    locale = form.get("Locale") or None
    if locale is not None and (
        len(locale) > 16
        or not locale.isascii()
        or not locale.replace("-", "").replace("_", "").isalnum()
    ):
        raise invalid("Locale", "a language tag like en or fr-FR")
    name = friendly_name(form, "CustomFriendlyName") if "CustomFriendlyName" in form else None
    if name is None and not name_is_safe(svc.friendly_name):
        # A service saved before names were restricted: its name no longer goes out.
        raise invalid("FriendlyName", f"update the service's FriendlyName: {NAME_RULE}")
    device_ip = form.get("DeviceIp") or None
    try:
        v = await engine.start(
            to,
            channel,
            client_ip=device_ip,
            locale=locale,
            code_length=svc.code_length,
            service_name=name or svc.friendly_name,
            owner=key.id,
        )
    except InvalidRequest as exc:
        if isinstance(exc, InvalidPhoneNumber):
            raise
        raise invalid(
            "DeviceIp" if "client_ip" in exc.message else "request", exc.message
        ) from None
    # Which service it belongs to, kept as long as the verification itself.
    await engine.store.set_flag(OWNER_KEY + v.id, svc.sid, v.expires_at + VERIFICATION_GRACE)
    return JSONResponse(verification_out(request, engine, svc, key, v), status_code=201)


@router.get("/Services/{service_sid}/Verifications/{verification_sid}")
async def fetch_verification(request: Request, call: ServiceDep, verification_sid: str) -> Response:
    vid = await owned(request, call.engine, call.service, verification_sid)
    v = await call.engine.get(vid, owner=call.tenant)
    return JSONResponse(verification_out(request, call.engine, call.service, call.key, v))


@router.post("/Services/{service_sid}/Verifications/{verification_sid}")
async def update_verification(
    request: Request, call: ServiceDep, verification_sid: str
) -> Response:
    engine = call.engine
    vid = await owned(request, engine, call.service, verification_sid)
    form = await read_form(request, _UPDATE_FIELDS)
    status = required(form, "Status")
    if status == "approved":
        raise invalid(
            "Status",
            "otpguard approves only with the right code; out-of-band approval is not supported",
        )
    if status != "canceled":
        raise invalid("Status", "only canceled is supported")
    v = await engine.get(vid, owner=call.tenant)
    if v.status is not Status.PENDING:
        raise not_found(request)  # Twilio: a finished verification is gone
    v = await engine.cancel(vid, owner=call.tenant)
    return JSONResponse(verification_out(request, engine, call.service, call.key, v))
