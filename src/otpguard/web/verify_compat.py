"""Twilio Verify v2-compatible endpoints under ``/v2``: move by changing one URL.

A Twilio client (the official SDKs, or plain HTTP) pointed at otpguard instead
of ``https://verify.twilio.com`` keeps working, and every otpguard protection
still applies: the calls go through :class:`otpguard.service.Verifier` like
``/v1`` ones (destination policy, fraud rules, rate limits, HMAC storage,
events) with otpguard's defaults (5-minute expiry, 3 sends per 10 minutes)::

    POST   /v2/Services                                   create a service (201)
    GET    /v2/Services/{ServiceSid}                      fetch it
    POST   /v2/Services/{ServiceSid}                      update FriendlyName, CodeLength
    DELETE /v2/Services/{ServiceSid}                      delete it (204)
    POST   /v2/Services/{ServiceSid}/Verifications        To, Channel, Locale,
                                                          CustomFriendlyName, DeviceIp (201)
    GET    /v2/Services/{ServiceSid}/Verifications/{Sid}  fetch a verification
    POST   /v2/Services/{ServiceSid}/Verifications/{Sid}  Status=canceled
    POST   /v2/Services/{ServiceSid}/VerificationCheck    Code and To or VerificationSid

Decisions where otpguard differs from Twilio (docs/migrating-from-twilio-verify.md):

* **Auth**: HTTP Basic, the username is the API key's id ``og_<12 hex>`` and the
  password the whole key ``og_<id>_<secret>`` (what Twilio calls the account SID
  and auth token). Anything else is Twilio's 20003 (401); a key without the
  ``verify`` scope is 20403 (403).
* **CodeLength** 6-10 (Twilio allows 4-10): below 6 is 60200.
* **FriendlyName** and **CustomFriendlyName** go into the message, so they are
  kept to a brand name (:data:`NAME_RULE`): no URL, no phone number, ASCII only.
* **Status=approved is refused** (60200): otpguard has no custom codes, and an
  out-of-band approval would let anyone holding an API key approve any pending
  verification without its code.
* **Parameters otpguard cannot honour** (CustomCode, CustomMessage, Amount, Payee,
  RateLimits, ...) are refused with 60200 naming them, never silently ignored.
* **Each create is a new verification** with a new sid (Twilio re-sends on the
  pending one); a check by ``To`` tries the number's newest pending ones under
  the service (at most 5), and every failure by ``To`` is 20404, counted.
* **Services belong to the API key** that created them (another key: 20404).
* **Finished verifications** (approved, canceled, expired) answer checks and
  updates with 20404 as Twilio's do, but a fetch still shows them until purged.
* ``to`` is the full E.164 number, as Twilio returns it: the caller sent it, and
  the ``/v1`` API keeps masking. Codes never appear in a response, log or error.
* **A start that needs a CAPTCHA** (``OTPGUARD_CHALLENGE_*``) is refused with 60410
  (403): Twilio's API has no parameter to carry the token, so ``/v2`` cannot pass
  the challenge step; ``/v1`` can.

Errors are Twilio's shape ``{"code", "message", "more_info", "status"}``: each
route catches every error itself (:class:`_TwilioRoute`), so the app-wide
``{"error": {...}}`` handlers stay untouched. A path or method no route serves
is answered by the app (``{"error": {"code": "not_found"}}``), as for ``/v1``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ..apikeys import KeyCache, has_scope
from ..destinations import parse_destination
from ..errors import (
    ChallengeRequired,
    ChallengeUnavailable,
    Conflict,
    DeliveryError,
    DestinationRefused,
    Forbidden,
    InvalidEmailAddress,
    InvalidPhoneNumber,
    InvalidRequest,
    NotFound,
    OtpguardError,
    RateLimited,
    StorageError,
    Unauthorized,
)
from ..limits import UNKNOWN_IP
from ..models import Channel, Status, Verification
from ..phone import parse
from ..service import VERIFICATION_GRACE, Verifier
from ..stores.base import ApiKey
from .api import iso, tenant_of

log = logging.getLogger("otpguard.web.verify_compat")

# -- Twilio's error shape ---------------------------------------------------------

INVALID_PARAMETER = 60200
MAX_CHECK_ATTEMPTS = 60202
MAX_SEND_ATTEMPTS = 60203
LANDLINE = 60205
FRAUD_BLOCKED = 60410
GEO_BLOCKED = 60605
AUTHENTICATE = 20003
FORBIDDEN = 20403
NOT_FOUND = 20404
METHOD_NOT_ALLOWED = 20004
INTERNAL = 20500
UNAVAILABLE = 20503


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


def refused(reason: str) -> TwilioError:
    """otpguard's destination refusal reasons -> Twilio's closest Verify error (all 403)."""
    if reason == "number_type:fixed_line":
        return TwilioError(LANDLINE, 403, "SMS is not supported by landline phone number")
    if reason.startswith("fraud:"):
        return TwilioError(FRAUD_BLOCKED, 403, f"Verification delivery attempt blocked ({reason})")
    # country_not_allowed, blocklisted, premium_rate, shared_cost, other number
    # types, undeliverable, development_guard: refused by the destination policy.
    return TwilioError(GEO_BLOCKED, 403, f"Verification delivery attempt blocked ({reason})")


def translate(exc: OtpguardError, request: Request, *, checking: bool = False) -> TwilioError:
    """One otpguard error -> one Twilio error; messages never hold a code."""
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
        if checking:
            return TwilioError(MAX_CHECK_ATTEMPTS, 429, "Max check attempts reached", headers)
        return TwilioError(MAX_SEND_ATTEMPTS, 429, "Max send attempts reached", headers)
    if isinstance(exc, DestinationRefused):
        return refused(exc.reason)
    if isinstance(exc, ChallengeRequired):
        # Twilio's API has no CAPTCHA step and no parameter for a token: the closest
        # Verify error is Fraud Guard's "delivery attempt blocked" (nothing was sent).
        return TwilioError(FRAUD_BLOCKED, 403, "Verification delivery attempt blocked (challenge)")
    if isinstance(exc, ChallengeUnavailable):
        return TwilioError(UNAVAILABLE, 503, "Service unavailable")
    if isinstance(exc, InvalidPhoneNumber | InvalidEmailAddress):
        return invalid("To", exc.message)
    if isinstance(exc, InvalidRequest):
        return invalid("Code" if checking else "request", exc.message)
    if isinstance(exc, Unauthorized):
        return TwilioError(AUTHENTICATE, 401, "Authenticate", _CHALLENGE)
    if isinstance(exc, Forbidden):
        return TwilioError(FORBIDDEN, 403, exc.message)
    if isinstance(exc, NotFound | Conflict):
        # Twilio deletes a verification once it is approved, canceled or expired;
        # acting on one answers 404, and so does otpguard.
        return not_found(request)
    if isinstance(exc, DeliveryError):
        if exc.reason == "invalid_number":
            return invalid("To", "the provider refused the number")
        if exc.reason == "not_sms_capable":
            return TwilioError(LANDLINE, 403, "SMS is not supported by landline phone number")
        return TwilioError(INTERNAL, 502, f"Delivery failed ({exc.reason})")
    if isinstance(exc, StorageError):
        return TwilioError(UNAVAILABLE, 503, "Service unavailable")
    return TwilioError(INTERNAL, 500, "Internal error")


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="otpguard"'}


class _TwilioRoute(APIRoute):
    """Every error raised in a /v2 route leaves as a Twilio-shaped response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except TwilioError as exc:
                return exc.response()
            except OtpguardError as exc:
                checking = request.url.path.endswith("/VerificationCheck")
                return translate(exc, request, checking=checking).response()
            except Exception as exc:  # never a stack trace, never a code
                log.error("unexpected error: %s", type(exc).__name__)
                return TwilioError(INTERNAL, 500, "Internal error").response()

        return run


# -- requests -------------------------------------------------------------------------

_SERVICE_SID = re.compile(r"^VA[0-9a-f]{32}$")
_VERIFICATION_SID = re.compile(r"^VE[0-9a-f]{32}$")
_CHANNELS = {
    "sms": Channel.SMS,
    "whatsapp": Channel.WHATSAPP,
    "call": Channel.VOICE,
    "email": Channel.EMAIL,
}
_CHANNEL_NAMES = {v: k for k, v in _CHANNELS.items()}
_LINE_TYPES = {"mobile": "mobile", "fixed_line": "landline", "voip": "voip"}
_MAX_FIELDS = 20


async def _form(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The form-encoded body, each field once, only ``allowed`` fields."""
    body = await request.body()
    if not body:
        return {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise invalid("body", "send application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise invalid("body", "not a valid form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise invalid(name[:40], "not supported by otpguard")
        if name in form:
            raise invalid(name, "given more than once")
        form[name] = value
    return form


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise invalid(name, "required")
    return value


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


async def _authenticate(request: Request, engine: Verifier) -> ApiKey:
    """Basic auth: username ``og_<key id>``, password the whole key ``og_<id>_<secret>``.
    Every /v2 route (services included) needs the ``verify`` scope."""
    creds = _basic_credentials(request)
    try:
        cache: KeyCache = request.app.state.key_cache
        key = await cache.authenticate(engine.store, creds[1] if creds else None)
    except Unauthorized:
        raise TwilioError(AUTHENTICATE, 401, "Authenticate", _CHALLENGE) from None
    assert creds is not None
    if creds[0] != f"og_{key.id}":
        raise TwilioError(AUTHENTICATE, 401, "Authenticate", _CHALLENGE)
    if not has_scope(key, "verify"):
        raise TwilioError(FORBIDDEN, 403, "this endpoint needs an API key with the verify scope")
    return key


def account_sid(key: ApiKey) -> str:
    """A stable Twilio-shaped account SID for an API key (``AC`` + 32 hex)."""
    return "AC" + hashlib.sha256(f"otpguard-account:{key.id}".encode()).hexdigest()[:32]


def _base_url(request: Request) -> str:
    public: str = request.app.state.settings.public_url
    if public:
        return public.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


# -- services, kept as flags -----------------------------------------------------------
#
# The storage contract has no services table, and adding one would mean a
# migration and a contract test in every backend for a few rows of
# configuration. A flag is already a durable, atomic key -> string in every
# backend, and ``purge`` only removes flags whose ``until`` has passed: a
# far-future ``until`` keeps a service for good, deleting one sets ``until`` to
# now. The value is the service as JSON. The same mechanism records which service
# each verification was started under, for as long as the verification is kept.

FOREVER = 253402300799.0  # 9999-12-31T23:59:59Z
_SERVICE_KEY = "verify_compat:service:"
_OWNER_KEY = "verify_compat:verification:"


@dataclass(frozen=True)
class VerifyService:
    sid: str
    account_sid: str
    friendly_name: str
    code_length: int
    created_at: float
    updated_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> VerifyService:
        data = json.loads(raw)
        return cls(
            sid=str(data["sid"]),
            account_sid=str(data["account_sid"]),
            friendly_name=str(data["friendly_name"]),
            code_length=int(data["code_length"]),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
        )


async def _load_service(request: Request, engine: Verifier, sid: str, key: ApiKey) -> VerifyService:
    """The service, if it belongs to ``key`` (its account SID is the key's; an
    ``admin`` key sees every key's); 20404 otherwise, exactly as for no service."""
    if not _SERVICE_SID.match(sid):
        raise not_found(request)
    raw = await engine.store.get_flag(_SERVICE_KEY + sid, engine.clock())
    if raw is None:
        raise not_found(request)
    svc = VerifyService.from_json(raw)
    if tenant_of(key) is not None and svc.account_sid != account_sid(key):
        raise not_found(request)
    return svc


async def _save_service(engine: Verifier, svc: VerifyService) -> None:
    await engine.store.set_flag(_SERVICE_KEY + svc.sid, svc.to_json(), FOREVER)


# A friendly name is caller text that goes into the SMS ("Your {name} code is ..."):
# kept to a brand name, so that nobody can make otpguard text "PayPal. Call 0800 ..."
# or a link. ASCII only (no look-alike letters), no ".", "/", ":" or "@" (no URL
# or address), at most 4 digits (no phone number), at least one letter.
_NAME_RE = re.compile(r"^[A-Za-z0-9&' -]{1,30}$")
_NAME_MAX_DIGITS = 4
NAME_RULE = "1-30 of A-Z a-z 0-9 space & ' -, with a letter and at most 4 digits (no URL or number)"


def name_is_safe(value: str) -> bool:
    return (
        bool(_NAME_RE.match(value))
        and any(c.isalpha() for c in value)
        and sum(c.isdigit() for c in value) <= _NAME_MAX_DIGITS
        and "  " not in value
    )


def _friendly_name(form: dict[str, str], name: str) -> str:
    value = form[name].strip()
    if not name_is_safe(value):
        raise invalid(name, NAME_RULE)
    return value


def _code_length(raw: str) -> int:
    # ASCII digits only, and few: str.isdigit() is true for "\u00b9" (int() refuses it)
    # and "\u0661\u0660" (int() reads 10), and int() refuses more than 4300 digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 2) or not 6 <= int(raw) <= 10:
        raise invalid("CodeLength", "otpguard's codes are 6 to 10 digits")
    return int(raw)


def _service_out(request: Request, svc: VerifyService) -> dict[str, Any]:
    url = f"{_base_url(request)}/v2/Services/{svc.sid}"
    return {
        "sid": svc.sid,
        "account_sid": svc.account_sid,
        "friendly_name": svc.friendly_name,
        "code_length": svc.code_length,
        "lookup_enabled": False,
        "psd2_enabled": False,
        "skip_sms_to_landlines": True,  # otpguard's destination policy refuses them
        "dtmf_input_required": False,
        "tts_name": None,
        "do_not_share_warning_enabled": False,
        "custom_code_enabled": False,
        "push": {},
        "totp": {},
        "default_template_sid": None,
        "whatsapp": {},
        "verify_event_subscription_enabled": False,
        "date_created": iso(svc.created_at),
        "date_updated": iso(svc.updated_at),
        "url": url,
        "links": {
            "verifications": f"{url}/Verifications",
            "verification_checks": f"{url}/VerificationCheck",
        },
    }


# -- verifications ------------------------------------------------------------------------


async def _owned(
    request: Request, engine: Verifier, svc: VerifyService, verification_sid: str
) -> str:
    """The verification id if it was started under this service; 20404 otherwise."""
    if not _VERIFICATION_SID.match(verification_sid):
        raise not_found(request)
    owner = await engine.store.get_flag(_OWNER_KEY + verification_sid, engine.clock())
    if owner != svc.sid:
        raise not_found(request)
    return verification_sid


def _verification_out(
    request: Request, engine: Verifier, svc: VerifyService, key: ApiKey, v: Verification
) -> dict[str, Any]:
    channel = _CHANNEL_NAMES[v.channel]
    # An address has no carrier: Twilio answers a null one for the email channel.
    number_type = None
    if v.channel is not Channel.EMAIL:
        number_type = parse(v.to, engine.settings.default_region).type
    return {
        "sid": v.id,
        "service_sid": svc.sid,
        "account_sid": account_sid(key),
        "to": v.to,
        "channel": channel,
        "status": v.status.value,
        "valid": v.status is Status.APPROVED,
        "lookup": {
            "carrier": None
            if number_type is None
            else {
                "error_code": None,
                "name": None,
                "mobile_country_code": None,
                "mobile_network_code": None,
                "type": _LINE_TYPES.get(number_type, number_type),
            }
        },
        "amount": None,
        "payee": None,
        # The first send; each Twilio "create" is a new otpguard verification.
        "send_code_attempts": [
            {"attempt_sid": "VL" + v.id[2:], "channel": channel, "time": iso(v.created_at)}
        ],
        "date_created": iso(v.created_at),
        "date_updated": iso(v.updated_at),
        "sna": None,
        "url": f"{_base_url(request)}/v2/Services/{svc.sid}/Verifications/{v.id}",
    }


def _check_out(svc: VerifyService, key: ApiKey, v: Verification, valid: bool) -> dict[str, Any]:
    status = v.status if not valid else Status.APPROVED
    return {
        "sid": v.id,
        "service_sid": svc.sid,
        "account_sid": account_sid(key),
        "to": v.to,
        "channel": _CHANNEL_NAMES[v.channel],
        "status": status.value,
        "valid": valid,
        "amount": None,
        "payee": None,
        "date_created": iso(v.created_at),
        "date_updated": iso(v.updated_at),
        "sna_attempts_error_codes": [],
    }


# -- routes ---------------------------------------------------------------------------------

router = APIRouter(route_class=_TwilioRoute, include_in_schema=False)

_SERVICE_FIELDS = frozenset({"FriendlyName", "CodeLength"})
_START_FIELDS = frozenset({"To", "Channel", "Locale", "CustomFriendlyName", "DeviceIp"})
_CHECK_FIELDS = frozenset({"Code", "To", "VerificationSid"})
_UPDATE_FIELDS = frozenset({"Status"})


def _engine(request: Request) -> Verifier:
    engine: Verifier = request.app.state.verifier
    return engine


@router.post("/Services")
async def create_service(request: Request) -> Response:
    engine = _engine(request)
    key = await _authenticate(request, engine)
    form = await _form(request, _SERVICE_FIELDS)
    _required(form, "FriendlyName")
    length = form.get("CodeLength")
    now = engine.clock()
    svc = VerifyService(
        sid="VA" + secrets.token_hex(16),
        account_sid=account_sid(key),
        friendly_name=_friendly_name(form, "FriendlyName"),
        code_length=engine.settings.code_length if length is None else _code_length(length),
        created_at=now,
        updated_at=now,
    )
    await _save_service(engine, svc)
    return JSONResponse(_service_out(request, svc), status_code=201)


@router.get("/Services/{service_sid}")
async def fetch_service(request: Request, service_sid: str) -> Response:
    engine = _engine(request)
    key = await _authenticate(request, engine)
    svc = await _load_service(request, engine, service_sid, key)
    return JSONResponse(_service_out(request, svc))


@router.post("/Services/{service_sid}")
async def update_service(request: Request, service_sid: str) -> Response:
    engine = _engine(request)
    key = await _authenticate(request, engine)
    svc = await _load_service(request, engine, service_sid, key)
    form = await _form(request, _SERVICE_FIELDS)
    changes: dict[str, Any] = {"updated_at": engine.clock()}
    if "FriendlyName" in form:
        changes["friendly_name"] = _friendly_name(form, "FriendlyName")
    if "CodeLength" in form:
        changes["code_length"] = _code_length(form["CodeLength"])
    svc = VerifyService(**{**asdict(svc), **changes})
    await _save_service(engine, svc)
    return JSONResponse(_service_out(request, svc))


@router.delete("/Services/{service_sid}")
async def delete_service(request: Request, service_sid: str) -> Response:
    engine = _engine(request)
    key = await _authenticate(request, engine)
    svc = await _load_service(request, engine, service_sid, key)
    # A flag whose time has passed reads as absent and is purged.
    await engine.store.set_flag(_SERVICE_KEY + svc.sid, svc.to_json(), engine.clock())
    return Response(status_code=204)


@router.post("/Services/{service_sid}/Verifications")
async def create_verification(request: Request, service_sid: str) -> Response:
    engine = _engine(request)
    key = await _authenticate(request, engine)
    svc = await _load_service(request, engine, service_sid, key)
    form = await _form(request, _START_FIELDS)
    to = _required(form, "To")
    channel = _CHANNELS.get(_required(form, "Channel"))
    if channel is None:
        raise invalid("Channel", "otpguard sends sms, whatsapp, call and email")
    locale = form.get("Locale") or None
    if locale is not None and (
        len(locale) > 16
        or not locale.isascii()
        or not locale.replace("-", "").replace("_", "").isalnum()
    ):
        raise invalid("Locale", "a language tag like en or fr-FR")
    name = _friendly_name(form, "CustomFriendlyName") if "CustomFriendlyName" in form else None
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
        if isinstance(exc, InvalidPhoneNumber | InvalidEmailAddress):
            raise
        raise invalid(
            "DeviceIp" if "client_ip" in exc.message else "request", exc.message
        ) from None
    # Which service it belongs to, kept as long as the verification itself.
    await engine.store.set_flag(_OWNER_KEY + v.id, svc.sid, v.expires_at + VERIFICATION_GRACE)
    return JSONResponse(_verification_out(request, engine, svc, key, v), status_code=201)


@router.get("/Services/{service_sid}/Verifications/{verification_sid}")
async def fetch_verification(request: Request, service_sid: str, verification_sid: str) -> Response:
    engine = _engine(request)
    key = await _authenticate(request, engine)
    svc = await _load_service(request, engine, service_sid, key)
    vid = await _owned(request, engine, svc, verification_sid)
    v = await engine.get(vid, owner=tenant_of(key))
    return JSONResponse(_verification_out(request, engine, svc, key, v))


@router.post("/Services/{service_sid}/Verifications/{verification_sid}")
async def update_verification(
    request: Request, service_sid: str, verification_sid: str
) -> Response:
    engine = _engine(request)
    key = await _authenticate(request, engine)
    svc = await _load_service(request, engine, service_sid, key)
    vid = await _owned(request, engine, svc, verification_sid)
    form = await _form(request, _UPDATE_FIELDS)
    status = _required(form, "Status")
    if status == "approved":
        raise invalid(
            "Status",
            "otpguard approves only with the right code; out-of-band approval is not supported",
        )
    if status != "canceled":
        raise invalid("Status", "only canceled is supported")
    v = await engine.get(vid, owner=tenant_of(key))
    if v.status is not Status.PENDING:
        raise not_found(request)  # Twilio: a finished verification is gone
    v = await engine.cancel(vid, owner=tenant_of(key))
    return JSONResponse(_verification_out(request, engine, svc, key, v))


@router.post("/Services/{service_sid}/VerificationCheck")
async def check_verification(request: Request, service_sid: str) -> Response:
    """Every failing check (no pending code for To, another service's verification,
    locked, malformed, wrong code) answers no sooner than ``failed_check_floor``
    after the request was authenticated: the time tells none of them apart."""
    engine = _engine(request)
    key = await _authenticate(request, engine)
    started = time.monotonic()
    try:
        response, valid = await _check(request, engine, key, service_sid, started)
    except (TwilioError, OtpguardError):
        await engine.pad_failed_check(started)
        raise
    if not valid:
        await engine.pad_failed_check(started)
    return response


async def _check(
    request: Request, engine: Verifier, key: ApiKey, service_sid: str, started: float
) -> tuple[Response, bool]:
    svc = await _load_service(request, engine, service_sid, key)
    form = await _form(request, _CHECK_FIELDS)
    code = _required(form, "Code")
    if not (code.isascii() and code.isdigit() and 6 <= len(code) <= 10):
        raise invalid("Code", "6 to 10 digits")
    if ("To" in form) == ("VerificationSid" in form):
        raise invalid("To", "give exactly one of To or VerificationSid")
    if "To" in form:
        return await _check_number(request, engine, key, svc, code, form["To"], started)
    vid = await _owned(request, engine, svc, form["VerificationSid"])
    before = await engine.get(vid, owner=tenant_of(key))
    if before.status is Status.MAX_ATTEMPTS_REACHED:
        raise TwilioError(MAX_CHECK_ATTEMPTS, 429, "Max check attempts reached")
    if before.status is not Status.PENDING:
        raise not_found(request)
    try:
        # Twilio's check carries no end-user IP: count wrong codes against the IP
        # that started the verification (DeviceIp), not a bucket shared by all.
        ip = before.client_ip if before.client_ip not in (None, UNKNOWN_IP) else None
        result = await engine.check(
            code, verification_id=vid, client_ip=ip, started=started, owner=tenant_of(key)
        )
    except InvalidRequest as exc:
        raise invalid("Code", exc.message) from None
    if result.valid or result.status in (Status.PENDING, Status.MAX_ATTEMPTS_REACHED):
        # A wrong code: 200 with status pending (or max_attempts_reached on the
        # check that used the last attempt), as Twilio answers.
        v = result.verification.with_(status=result.status)
        return JSONResponse(_check_out(svc, key, v, result.valid)), result.valid
    raise not_found(request)  # approved, canceled or expired in the meantime


async def _check_number(
    request: Request,
    engine: Verifier,
    key: ApiKey,
    svc: VerifyService,
    code: str,
    to: str,
    started: float,
) -> tuple[Response, bool]:
    """A check by To: the number's newest pending verifications of this service, newest
    first. Every failure (no pending code, wrong code, a code of another length,
    locked) is the same 20404, counted under the per-number cap: unlike Twilio's, the
    answer does not say whether the number has a pending verification."""
    try:
        parse_destination(to, None, engine.settings.default_region)
    except (InvalidPhoneNumber, InvalidEmailAddress) as exc:
        raise invalid("To", exc.message) from None

    async def in_service(candidates: list[Verification]) -> list[Verification]:
        keys = [_OWNER_KEY + v.id for v in candidates]
        owners = await engine.store.get_flags(keys, engine.clock()) if keys else {}
        return [v for v in candidates if owners.get(_OWNER_KEY + v.id) == svc.sid]

    try:
        # Twilio's check carries no end-user IP: only the per-number cap applies.
        result = await engine.check(
            code, to=to, started=started, owner=tenant_of(key), select=in_service, per_ip=False
        )
    except InvalidRequest as exc:
        raise invalid("Code", exc.message) from None
    return JSONResponse(_check_out(svc, key, result.verification, True)), True


def install(app: FastAPI) -> None:
    """EXTENSIONS hook: the Twilio Verify-compatible routes under /v2."""
    app.include_router(router, prefix="/v2")
