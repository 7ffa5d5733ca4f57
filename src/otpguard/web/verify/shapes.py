"""The JSON bodies of /v2 resources, in the fields and types the twilio SDK reads.

``to`` is the full E.164 number, as Twilio returns it: the caller sent it, and the
``/v1`` API keeps masking. Codes never appear in a response.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ...models import Channel, Status, Verification
from ...phone import parse
from ...service import Verifier
from ...stores.base import ApiKey
from ..api import iso
from .forms import CHANNEL_NAMES, account_sid, base_url
from .services import VerifyService

_LINE_TYPES = {"mobile": "mobile", "fixed_line": "landline", "voip": "voip"}


def service_out(request: Request, svc: VerifyService) -> dict[str, Any]:
    url = f"{base_url(request)}/v2/Services/{svc.sid}"
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
        "do_not_share_warning_enabled": True,  # every template says so
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


def attempt_sid(event_id: str) -> str:
    """``VL`` + 32 hex: the send's event id (25 hex), the SID of its Attempt."""
    return "VL" + event_id.rjust(32, "0")


def channel_name(value: str) -> str:
    """otpguard's channel value -> Twilio's (``voice`` is ``call``)."""
    known = {c.value: CHANNEL_NAMES.get(c, c.value) for c in Channel}
    return known.get(value, value)


def verification_out(
    request: Request,
    verifier: Verifier,
    svc: VerifyService,
    key: ApiKey,
    v: Verification,
    sends: list[tuple[str, float, str]],
) -> dict[str, Any]:
    """``sends``: ``(event id, time, channel)`` of each message, oldest first."""
    channel = CHANNEL_NAMES[v.channel]
    # An address has no carrier: Twilio answers a null one for the email channel.
    carrier = None
    if v.channel is not Channel.EMAIL:
        number_type = parse(v.to, verifier.settings.default_region).type
        carrier = {
            "error_code": None,
            "name": None,
            "mobile_country_code": None,
            "mobile_network_code": None,
            "type": _LINE_TYPES.get(number_type, number_type),
        }
    return {
        "sid": v.id,
        "service_sid": svc.sid,
        "account_sid": account_sid(key),
        "to": v.to,
        "channel": channel,
        "status": v.status.value,
        "valid": v.status is Status.APPROVED,
        "lookup": {"carrier": carrier},
        "amount": v.binding.display_amount,
        "payee": v.payee,
        "send_code_attempts": [
            {"attempt_sid": attempt_sid(eid), "channel": channel_name(ch), "time": iso(ts)}
            for eid, ts, ch in sends
        ],
        "date_created": iso(v.created_at),
        "date_updated": iso(v.updated_at),
        "sna": None,
        "url": f"{base_url(request)}/v2/Services/{svc.sid}/Verifications/{v.id}",
    }


def check_out(svc: VerifyService, key: ApiKey, v: Verification, valid: bool) -> dict[str, Any]:
    status = v.status if not valid else Status.APPROVED
    return {
        "sid": v.id,
        "service_sid": svc.sid,
        "account_sid": account_sid(key),
        "to": v.to,
        "channel": CHANNEL_NAMES[v.channel],
        "status": status.value,
        "valid": valid,
        "amount": v.binding.display_amount,
        "payee": v.payee,
        "date_created": iso(v.created_at),
        "date_updated": iso(v.updated_at),
        "sna_attempts_error_codes": [],
    }
