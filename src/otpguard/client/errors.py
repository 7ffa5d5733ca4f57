"""The API's error bodies turned back into the exceptions of :mod:`otpguard.errors`.

An error answer is ``{"error": {"code", "message", ...}}``; its ``code`` names the
class. The classes that carry context (``RateLimited``'s ``rule`` and
``retry_after``, ``DestinationRefused``'s ``reason``, ...) each have a builder
below; every other class of :mod:`otpguard.errors` is rebuilt from its message
alone, found by its ``code``, so a new plain error needs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from .. import errors as core


class DeliveryFailed(core.DeliveryError):
    """otpguard could not deliver the message (``reason``, ``provider_code``)."""


class Unreachable(core.OtpguardError, code="unreachable", status=503):
    """The otpguard server could not be reached or did not answer in time."""


def _plain_errors() -> dict[str, type[core.OtpguardError]]:
    """Every error class built from its message alone, by its ``code``."""
    found: dict[str, type[core.OtpguardError]] = {}
    for obj in vars(core).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, core.OtpguardError)
            and obj is not core.OtpguardError
            and obj.__init__ is core.OtpguardError.__init__
        ):
            found[obj.code] = obj
    return found


_PLAIN = _plain_errors()

#: What an error body holds besides ``code`` and ``message``, and the response.
_Builder = Callable[[dict[str, Any], str, httpx.Response], core.OtpguardError]


def _rate_limited(err: dict[str, Any], message: str, response: httpx.Response) -> core.RateLimited:
    retry_after = err.get("retry_after") or response.headers.get("retry-after") or 1
    return core.RateLimited(str(err.get("rule", "unknown")), float(retry_after), message)


def _refused(err: dict[str, Any], message: str, _: httpx.Response) -> core.DestinationRefused:
    return core.DestinationRefused(str(err.get("reason", "unknown")), message)


def _conflict(err: dict[str, Any], message: str, _: httpx.Response) -> core.Conflict:
    return core.Conflict(str(err.get("reason", "unknown")), message)


def _challenge(err: dict[str, Any], message: str, _: httpx.Response) -> core.ChallengeRequired:
    challenge = err.get("challenge")
    challenge = challenge if isinstance(challenge, dict) else {}
    scope = err.get("scope")
    return core.ChallengeRequired(
        {k: str(challenge.get(k, "")) for k in ("provider", "site_key")},
        reason=str(err.get("reason", "challenge_required")),
        scope=str(scope) if scope is not None else None,
        message=message,
    )


def _delivery(err: dict[str, Any], message: str, _: httpx.Response) -> DeliveryFailed:
    provider_code = err.get("provider_code")
    return DeliveryFailed(
        str(err.get("reason", "provider_error")),
        message,
        provider_code=int(provider_code) if provider_code is not None else None,
    )


_WITH_CONTEXT: dict[str, _Builder] = {
    core.RateLimited.code: _rate_limited,
    core.DestinationRefused.code: _refused,
    core.Conflict.code: _conflict,
    core.ChallengeRequired.code: _challenge,
    core.DeliveryError.code: _delivery,
}


def _unknown(code: str, message: str, status: int) -> core.OtpguardError:
    exc = core.OtpguardError(message)
    exc.code, exc.status = code, status
    return exc


def error_from_response(response: httpx.Response) -> core.OtpguardError:
    """The otpguard exception an error response stands for."""
    try:
        err = response.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        return _unknown(
            "bad_response",
            f"otpguard answered HTTP {response.status_code} without an otpguard error body "
            "(is the URL pointing at an otpguard server?)",
            response.status_code,
        )
    build = _WITH_CONTEXT.get(code)
    if build is not None:
        return build(err, message, response)
    plain = _PLAIN.get(code)
    if plain is not None:
        return plain(message)
    return _unknown(code, message, response.status_code)  # a newer server's code


def unreachable(base_url: str, exc: httpx.TransportError) -> Unreachable:
    """Why ``base_url`` gave no answer, for a login page's logs."""
    if isinstance(exc, httpx.ConnectTimeout):
        why = "the connection timed out"
    elif isinstance(exc, httpx.TimeoutException):
        why = "it did not answer in time"
    elif isinstance(exc, httpx.ConnectError):
        why = "the connection failed (is `otpguard serve` running there?)"
    else:
        why = f"the request failed ({type(exc).__name__})"
    return Unreachable(f"cannot reach otpguard at {base_url}: {why}")
