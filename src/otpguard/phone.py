"""Parsing, normalising and classifying numbers, and the destination policy.

Everything is offline, with the ``phonenumbers`` metadata (version pinned in
pyproject.toml). A number keys counters only in its E.164 form, so
``07400 123456`` (default region GB), ``+44 7400 123456`` and ``+447400123456``
are one number.

The policy refuses before anything is sent:

* invalid numbers (``InvalidPhoneNumber``);
* blocklisted numbers or prefixes (``blocklisted``); list entries are normalised
  like numbers (``07400`` with default region GB is ``+447400``), so a national
  form in the list matches the E.164 form a number is keyed by;
* regions not in ``OTPGUARD_ALLOWED_COUNTRIES`` (``country_not_allowed``), judged by
  the number's own region, so +44 7781 (Guernsey, GG), +44 7797 (Jersey, JE) and
  +44 7624 (Isle of Man, IM) need their own codes;
* number types not suitable for the channel: SMS and WhatsApp reach MOBILE only,
  voice also FIXED_LINE; FIXED_LINE_OR_MOBILE is allowed unless
  ``OTPGUARD_ALLOW_FIXED_LINE_OR_MOBILE=false`` (which refuses it for SMS and
  WhatsApp only: voice reaches either kind of line); VOIP only with
  ``OTPGUARD_ALLOW_VOIP=true``; PREMIUM_RATE (``premium_rate``), SHARED_COST
  (``shared_cost``) and every other type (``number_type:<type>``) never.

With Twilio test credentials, Twilio's magic numbers (+1 500 555 xxxx) pass,
since they are what those credentials accept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from .errors import ConfigError, InvalidPhoneNumber
from .models import PHONE_CHANNELS, Channel

if TYPE_CHECKING:
    from .config import Settings

MAX_INPUT_LENGTH = 32
_SEPARATORS = re.compile(r"[\s\-().]")
TWILIO_MAGIC_PREFIX = "+1500555"

TYPE_NAMES: dict[int, str] = {
    getattr(PhoneNumberType, name): name.lower()
    for name in dir(PhoneNumberType)
    if name.isupper() and isinstance(getattr(PhoneNumberType, name), int)
}


@dataclass(frozen=True)
class PhoneNumber:
    e164: str
    region: str | None  # ISO 3166-1 alpha-2 of the number's own region
    type: str  # phonenumbers type, lower case: mobile, fixed_line, premium_rate, ...

    @property
    def prefix(self) -> str:
        """The E.164 number minus its last four digits (groups a range of 10,000 numbers)."""
        return self.e164[:-4]

    @property
    def is_twilio_magic(self) -> bool:
        return self.e164.startswith(TWILIO_MAGIC_PREFIX) and len(self.e164) == 12


def parse(raw: str, default_region: str = "GB") -> PhoneNumber:
    """Parse and validate; raise InvalidPhoneNumber with a message fit for the caller."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("'to' must be a phone number, like +447400123456")
    text = raw.strip()
    if len(text) > MAX_INPUT_LENGTH or not text.isascii() or not text.isprintable():
        raise InvalidPhoneNumber(
            "'to' is not a phone number: use digits with an optional leading +, like +447400123456"
        )
    if any(c.isalpha() for c in text):
        # phonenumbers would read letters as a keypad (vanity numbers) and drop
        # extensions: a code must go to exactly the digits the caller meant.
        raise InvalidPhoneNumber(
            "'to' must not contain letters: use digits with an optional leading +, "
            "like +447400123456"
        )
    try:
        num = phonenumbers.parse(text, default_region)
    except NumberParseException:
        raise InvalidPhoneNumber(
            f"'to' could not be read as a phone number (default region {default_region}); "
            "write it in international form, like +447400123456"
        ) from None
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    magic = e164.startswith(TWILIO_MAGIC_PREFIX) and len(e164) == 12
    # is_valid_number is is_valid_number_for_region(num, region_code_for_number(num)):
    # the region, the dearest part (a +44 number is tried against GB, GG, JE, IM), once.
    region = phonenumbers.region_code_for_number(num)
    valid = region is not None and phonenumbers.is_valid_number_for_region(num, region)
    if not magic and not valid:
        raise InvalidPhoneNumber(
            "'to' is not a valid phone number; check the digits and the country code"
        )
    return PhoneNumber(
        e164=e164,
        region=region if region and region != "ZZ" else None,
        type=TYPE_NAMES.get(phonenumbers.number_type(num), "unknown"),
    )


def normalize(raw: str, default_region: str = "GB") -> str:
    return parse(raw, default_region).e164


def normalize_pattern(raw: str, default_region: str = "GB") -> str:
    """A blocklist/allowlist entry as an E.164 number or prefix.

    ``+44 7400``, ``0044 7400`` and (default region GB) ``07400`` are all
    ``+447400``; a full national number becomes its E.164 form. Raises ValueError
    when the entry cannot be read as one."""
    try:  # a whole number, in any form the API accepts
        return parse(raw, default_region).e164
    except InvalidPhoneNumber:
        pass
    cleaned = _SEPARATORS.sub("", raw)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if cleaned.startswith("+"):
        digits = cleaned[1:]
        if digits.isascii() and digits.isdigit() and len(digits) <= 15:
            return cleaned
    elif cleaned.isascii() and cleaned.isdigit():
        meta = phonenumbers.PhoneMetadata.metadata_for_region(default_region)
        national = meta.national_prefix if meta is not None else None
        if national and cleaned.startswith(national) and len(cleaned) > len(national):
            cc = phonenumbers.country_code_for_region(default_region)
            return f"+{cc}{cleaned[len(national) :]}"
    raise ValueError(
        f"{raw!r} is not a number or prefix; write it in international form, "
        "like +447400 (a prefix) or +447400123456"
    )


def _normalize_list(patterns: list[str] | None, default_region: str, setting: str) -> list[str]:
    out = []
    for raw in patterns or []:
        if not raw.strip():
            continue
        try:
            out.append(normalize_pattern(raw, default_region))
        except ValueError as exc:
            raise ConfigError(f"{setting}: {exc}") from None
    return out


def _matches(e164: str, patterns: list[str]) -> bool:
    return any(e164.startswith(p) for p in patterns)


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    reason: str | None = None


class DestinationPolicy:
    def __init__(
        self,
        allowed_countries: list[str],
        *,
        allow_fixed_line_or_mobile: bool = True,
        allow_voip: bool = False,
        blocklist: list[str] | None = None,
        allowlist: list[str] | None = None,
        twilio_test_credentials: bool = False,
        default_region: str = "GB",
    ) -> None:
        self.allowed_countries = {c.upper() for c in allowed_countries}
        self.allow_fixed_line_or_mobile = allow_fixed_line_or_mobile
        self.allow_voip = allow_voip
        self.blocklist = _normalize_list(blocklist, default_region, "OTPGUARD_BLOCKLIST")
        self.allowlist = _normalize_list(allowlist, default_region, "OTPGUARD_ALLOWLIST")
        self.twilio_test_credentials = twilio_test_credentials

    @classmethod
    def from_settings(cls, settings: Settings) -> DestinationPolicy:
        return cls(
            settings.allowed_countries,
            allow_fixed_line_or_mobile=settings.allow_fixed_line_or_mobile,
            allow_voip=settings.allow_voip,
            blocklist=settings.blocklist,
            allowlist=settings.allowlist,
            twilio_test_credentials=settings.twilio_test_credentials,
            default_region=settings.default_region,
        )

    def is_allowlisted(self, number: PhoneNumber) -> bool:
        """Allowlisted numbers skip the fraud rules, never the type policy."""
        return _matches(number.e164, self.allowlist)

    def _type_allowed(self, number_type: str, channel: Channel) -> PolicyDecision:
        if number_type == "mobile":
            return PolicyDecision(True)
        if number_type == "fixed_line_or_mobile" and (
            self.allow_fixed_line_or_mobile or channel is Channel.VOICE
        ):
            return PolicyDecision(True)  # voice reaches a line of either kind
        if number_type == "fixed_line" and channel is Channel.VOICE:
            return PolicyDecision(True)
        if number_type == "voip" and self.allow_voip:
            return PolicyDecision(True)
        if number_type == "premium_rate":
            return PolicyDecision(False, "premium_rate")
        if number_type == "shared_cost":
            return PolicyDecision(False, "shared_cost")
        return PolicyDecision(False, f"number_type:{number_type}")

    def decide(self, number: PhoneNumber, channel: Channel) -> PolicyDecision:
        if self.twilio_test_credentials and number.is_twilio_magic:
            return PolicyDecision(True)
        if _matches(number.e164, self.blocklist):
            return PolicyDecision(False, "blocklisted")
        if number.region is None or number.region not in self.allowed_countries:
            return PolicyDecision(False, "country_not_allowed")
        return self._type_allowed(number.type, channel)

    def explain(self, number: PhoneNumber) -> dict[str, object]:
        """Country, type and the decision for every channel (for the CLI and API)."""
        return {
            "number": number.e164,
            "country": number.region,
            "type": number.type,
            "allowlisted": self.is_allowlisted(number),
            "channels": {
                ch.value: {"allowed": d.allowed, "reason": d.reason}
                for ch in Channel
                if ch in PHONE_CHANNELS
                for d in [self.decide(number, ch)]
            },
        }
