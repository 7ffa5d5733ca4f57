"""What both clients share around the I/O: where and as whom to connect, and how an
answer becomes a result or an exception."""

from __future__ import annotations

import os
from typing import TypeVar

import httpx

from ..errors import ConfigError, OtpguardError
from ..version import VERSION
from .calls import Call
from .errors import error_from_response

#: Connect within 3 s; the server may take up to its Twilio timeout (10 s) to send.
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=3.0)
DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = f"otpguard-client/{VERSION}"

T = TypeVar("T")


def connection(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The server's URL and the request headers, from the arguments or the environment
    (``OTPGUARD_URL``, ``OTPGUARD_API_KEY``)."""
    url = (base_url or os.environ.get("OTPGUARD_URL") or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the otpguard URL must start with http:// or https://, not {url!r}")
    key = api_key or os.environ.get("OTPGUARD_API_KEY", "")
    if not key:
        raise ConfigError(
            "an API key is required: create one with `otpguard api-keys create --name my-app` "
            "and pass it as api_key= (or set OTPGUARD_API_KEY)"
        )
    return url, {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}


def result(call: Call[T], response: httpx.Response) -> T:
    """The call's typed result, or the exception the error answer stands for."""
    if response.status_code >= 400:
        raise error_from_response(response)
    try:
        return call.parse(response.json())
    except (ValueError, KeyError, TypeError) as exc:
        raise OtpguardError(
            f"otpguard answered {call.method} {call.path} with an unexpected body"
        ) from exc
