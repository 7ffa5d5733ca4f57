"""Provider error codes -> otpguard's stable delivery reasons."""

from __future__ import annotations

# Twilio error codes (https://www.twilio.com/docs/api/errors) that mean "this
# destination cannot be reached"; everything else is a generic provider error.
TWILIO_REASONS: dict[int, str] = {
    21211: "invalid_number",
    21614: "not_sms_capable",
    21612: "unroutable",
    21408: "country_not_permitted",
    21610: "unsubscribed",
    # The Calls API's codes for the same refusals.
    21217: "invalid_number",
    21214: "unroutable",
    21215: "country_not_permitted",
}


def reason_for_provider_code(code: int | None) -> str:
    if code is None:
        return "provider_error"
    return TWILIO_REASONS.get(int(code), "provider_error")
