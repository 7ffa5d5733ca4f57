"""Every exception otpguard raises on purpose.

One root, a shallow tree, each class carrying the context a caller needs and a
stable machine-readable ``code`` that the HTTP API returns unchanged::

    OtpguardError                    code
    +-- ConfigError                  configuration_error (start-up only)
    +-- InvalidRequest               invalid_request            400
    |   +-- InvalidPhoneNumber       invalid_phone_number       400
    |   +-- InvalidEmailAddress      invalid_email_address      400
    +-- Unauthorized                 unauthorized               401
    +-- Forbidden                    forbidden                  403
    |   +-- HttpsRequired            https_required             403
    +-- DestinationRefused           destination_refused        403 (reason=...)
    +-- NotFound                     not_found                  404
    +-- Conflict                     conflict                   409 (reason=...)
    +-- ChallengeRequired            challenge_required         428 (challenge=, reason=, scope=)
    +-- RateLimited                  rate_limited               429 (rule=..., retry_after=...)
    +-- DeliveryError                delivery_failed            502 (reason=..., provider_code=...)
    +-- StorageError                 unavailable                503
    +-- ChallengeUnavailable         challenge_unavailable      503 (CAPTCHA provider silent)
    +-- SinkFailed (sinks.py)        alert_sink_failed (internal: retried, never an HTTP answer)
    +-- Unreachable (client/)        unreachable (the client could not reach the server)

Messages never contain a code, a key or a provider response body.
"""

from __future__ import annotations

import math
from typing import Any


class OtpguardError(Exception):
    """Root of every otpguard error."""

    code: str = "error"
    status: int = 500

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, **kwargs: Any
    ) -> None:
        """A subclass names its ``code`` and HTTP ``status`` where it is declared:
        ``class NotFound(OtpguardError, code="not_found", status=404)``; a status
        not named is the parent's."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()

    def details(self) -> dict[str, object]:
        """Extra machine-readable fields returned beside ``code`` and ``message``."""
        return {}


class ConfigError(OtpguardError, code="configuration_error"):
    """The configuration is invalid; the message says what to set."""


class InvalidRequest(OtpguardError, code="invalid_request", status=400):
    """The request is malformed."""


class InvalidPhoneNumber(InvalidRequest, code="invalid_phone_number"):
    """The phone number could not be parsed as a valid number."""


class InvalidEmailAddress(InvalidRequest, code="invalid_email_address"):
    """The email address could not be read as one plain, deliverable address."""


class Unauthorized(OtpguardError, code="unauthorized", status=401):
    """Missing or wrong credentials."""


class Forbidden(OtpguardError, code="forbidden", status=403):
    """The credentials are valid but not allowed to do this."""


class HttpsRequired(Forbidden, code="https_required"):
    """Plain HTTP is refused; use HTTPS."""


class _Refusal(OtpguardError):
    """A refusal whose ``reason`` (a stable code of its own) says which one."""

    #: The message when none is given, ``{reason}`` filled in.
    template = "refused: {reason}"

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or self.template.format(reason=reason))
        self.reason = reason

    def details(self) -> dict[str, object]:
        return {"reason": self.reason}


class DestinationRefused(_Refusal, code="destination_refused", status=403):
    """The destination may not receive codes (``reason`` says why)."""

    template = "destination refused: {reason}"


class NotFound(OtpguardError, code="not_found", status=404):
    """No such verification (or resource)."""


class Conflict(_Refusal, code="conflict", status=409):
    """The verification is not in a state that allows this (``reason`` says which)."""

    template = "not allowed: verification is {reason}"


class RateLimited(OtpguardError, code="rate_limited", status=429):
    """Too many requests; ``rule`` names the limit and ``retry_after`` the wait in seconds."""

    def __init__(self, rule: str, retry_after: float, message: str = "") -> None:
        self.rule = rule
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            message or f"rate limited by rule '{rule}'; retry after {self.retry_after} s"
        )

    def details(self) -> dict[str, object]:
        return {"rule": self.rule, "retry_after": self.retry_after}


#: DeliveryError.reason when the provider may or may not have sent the message.
UNKNOWN_OUTCOME = "unknown_outcome"


class DeliveryError(OtpguardError, code="delivery_failed", status=502):
    """The transport could not deliver the message."""

    def __init__(
        self,
        reason: str = "provider_error",
        message: str = "",
        *,
        provider_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message or f"delivery failed: {reason}")
        self.reason = reason
        self.provider_code = provider_code
        self.retryable = retryable

    @property
    def outcome_unknown(self) -> bool:
        """The request reached the provider but its answer did not come back whole
        (reason ``unknown_outcome``): the message may have been sent."""
        return self.reason == UNKNOWN_OUTCOME

    def details(self) -> dict[str, object]:
        out: dict[str, object] = {"reason": self.reason}
        if self.provider_code is not None:
            out["provider_code"] = self.provider_code
        if self.outcome_unknown:
            out["outcome_unknown"] = True
        return out


class StorageError(OtpguardError, code="unavailable", status=503):
    """The store cannot be reached or failed; otpguard fails closed."""


class ChallengeRequired(OtpguardError, code="challenge_required", status=428):
    """This start needs a passed CAPTCHA: repeat it with a ``challenge_token``.

    ``challenge`` is what the browser needs to show the widget (``provider``,
    ``site_key``); ``reason`` is ``challenge_required`` (no token was given) or
    ``challenge_failed`` (the provider refused the token); ``scope`` optionally names
    what is under pressure (``global``, ``country``, ...). Nothing was sent."""

    def __init__(
        self,
        challenge: dict[str, str],
        *,
        reason: str = "challenge_required",
        scope: str | None = None,
        message: str = "",
    ) -> None:
        if not message:
            message = (
                "the CAPTCHA was not passed; show it again and repeat the start with a new token"
                if reason == "challenge_failed"
                else "show the CAPTCHA and repeat the start with its challenge_token"
            )
        super().__init__(message)
        self.challenge = dict(challenge)
        self.reason = reason
        self.scope = scope

    @property
    def provider(self) -> str:
        return self.challenge.get("provider", "")

    @property
    def site_key(self) -> str:
        return self.challenge.get("site_key", "")

    def details(self) -> dict[str, object]:
        out: dict[str, object] = {"reason": self.reason, "challenge": dict(self.challenge)}
        if self.scope is not None:
            out["scope"] = self.scope
        return out


class ChallengeUnavailable(OtpguardError, code="challenge_unavailable", status=503):
    """The CAPTCHA provider could not confirm the token; otpguard fails closed."""
