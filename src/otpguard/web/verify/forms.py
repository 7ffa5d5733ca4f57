"""Reading a /v2 request: the form body, HTTP Basic credentials, and the values
otpguard restricts (friendly names, code lengths).

Auth: the username is the API key's id ``og_<12 hex>`` and the password the whole
key ``og_<id>_<secret>`` (what Twilio calls the account SID and auth token).
Anything else is Twilio's 20003 (401); a key without the ``verify`` scope is
20403 (403).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from urllib.parse import parse_qsl

from fastapi import Request

from ...apikeys import KeyCache, has_scope
from ...errors import InvalidRequest, Unauthorized
from ...models import Channel
from ...purpose import DEFAULT, TRANSACTION, Binding, canonical_payee, parse_display_amount
from ...service import Verifier
from ...stores.base import ApiKey
from .errors import FORBIDDEN, PSD2_REQUIRED, TwilioError, invalid, unauthenticated

CHANNELS = {
    "sms": Channel.SMS,
    "whatsapp": Channel.WHATSAPP,
    "call": Channel.VOICE,
    "email": Channel.EMAIL,
}
CHANNEL_NAMES = {v: k for k, v in CHANNELS.items()}
_MAX_FIELDS = 20


async def read_form(request: Request, allowed: frozenset[str]) -> dict[str, str]:
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


def required(form: dict[str, str], name: str) -> str:
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


async def authenticate(request: Request, verifier: Verifier) -> ApiKey:
    """Basic auth: username ``og_<key id>``, password the whole key ``og_<id>_<secret>``.
    Every /v2 route (services included) needs the ``verify`` scope."""
    creds = _basic_credentials(request)
    try:
        cache: KeyCache = request.app.state.key_cache
        key = await verifier.authenticate(creds[1] if creds else None, cache)
    except Unauthorized:
        raise unauthenticated() from None
    assert creds is not None
    if creds[0] != f"og_{key.id}":
        raise unauthenticated()
    if not has_scope(key, "verify"):
        raise TwilioError(FORBIDDEN, 403, "this endpoint needs an API key with the verify scope")
    return key


def account_sid(key: ApiKey) -> str:
    """A stable Twilio-shaped account SID for an API key (``AC`` + 32 hex)."""
    return "AC" + hashlib.sha256(f"otpguard-account:{key.id}".encode()).hexdigest()[:32]


def base_url(request: Request) -> str:
    public: str = request.app.state.settings.public_url
    if public:
        return public.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


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


def friendly_name(form: dict[str, str], name: str) -> str:
    value = form[name].strip()
    if not name_is_safe(value):
        raise invalid(name, NAME_RULE)
    return value


def code_length(raw: str) -> int:
    # ASCII digits only, and few: str.isdigit() is true for "\u00b9" (int() refuses it)
    # and "\u0661\u0660" (int() reads 10), and int() refuses more than 4300 digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 2) or not 6 <= int(raw) <= 10:
        raise invalid("CodeLength", "otpguard's codes are 6 to 10 digits")
    return int(raw)


def psd2(form: dict[str, str]) -> Binding:
    """Twilio's PSD2 ``Amount`` and ``Payee``: both or neither, a transaction's binding."""
    if "Amount" not in form and "Payee" not in form:
        return DEFAULT
    if not form.get("Amount") or not form.get("Payee"):
        raise TwilioError(PSD2_REQUIRED, 400, "'Amount' & 'Payee' params are required")
    try:
        amount, currency = parse_display_amount(form["Amount"])
    except InvalidRequest as exc:
        raise invalid("Amount", exc.message) from None
    try:
        payee = canonical_payee(form["Payee"])
    except InvalidRequest as exc:
        raise invalid("Payee", exc.message) from None
    return Binding(TRANSACTION, amount, currency, payee)
