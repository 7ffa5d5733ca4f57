"""The Twilio SDK at otpguard's boundary: its HTTP client without its memory of
requests and responses (they hold the code), and its errors as ``DeliveryError``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient

from ..errors import UNKNOWN_OUTCOME, DeliveryError
from .errors import TWILIO_REASONS

# The SDK logs each request and response line at INFO. It does not log bodies
# today; holding its logger at WARNING keeps it that way whatever a later SDK
# version or a DEBUG root logger would do.
sdk_log = logging.getLogger("otpguard.transports.twilio.sdk")
sdk_log.setLevel(logging.WARNING)

#: Twilio error code -> DeliveryError.reason (shared with the status callbacks).
ERROR_REASONS = TWILIO_REASONS


class QuietAsyncHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's aiohttp client, minus its memory of the last request and response.

    ``AsyncTwilioHttpClient`` keeps both on ``_test_only_last_*``; they hold the
    body and Twilio's echo of it, so they are cleared after every request.
    """

    def __init__(
        self, *, connect_timeout: float, max_connections: int, logger: logging.Logger
    ) -> None:
        super().__init__(pool_connections=False, logger=logger)
        # pool_connections=False leaves no session; ours carries the connect timeout and
        # the connection limit (aiohttp's default of 100 silently queued the rest).
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(connect=connect_timeout, sock_connect=connect_timeout),
            connector=aiohttp.TCPConnector(limit=max_connections),
        )

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:
            # aiohttp 3.14 deprecates the BasicAuth object the SDK would build from
            # ``auth``; the same header, encoded the way aiohttp now recommends.
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        try:
            return await super().request(
                method, url, params, data, headers, None, timeout, allow_redirects
            )
        finally:
            self._test_only_last_request = None
            self._test_only_last_response = None


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Map the SDK's and aiohttp's exceptions to DeliveryError, once, at the boundary."""
    try:
        yield
    except (TwilioRestException, TwilioServiceException) as exc:
        raise rest_error(exc) from exc
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        # No connection, so no request: Twilio cannot have sent anything.
        raise DeliveryError(
            "network_error",
            f"could not connect to Twilio ({type(exc).__name__})",
            retryable=True,
        ) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # Connected: the request may have been written and the message sent.
        raise DeliveryError(
            UNKNOWN_OUTCOME,
            f"no answer from Twilio ({type(exc).__name__}); the message may have been sent",
        ) from exc
    except (TwilioException, ValueError, KeyError, TypeError):
        # A response that does not parse (its text may be Twilio's echo: not chained).
        raise DeliveryError(
            UNKNOWN_OUTCOME, "unexpected response from Twilio; the message may have been sent"
        ) from None


def rest_error(exc: TwilioException) -> DeliveryError:
    status = int(getattr(exc, "status", 0) or 0)
    raw = str(getattr(exc, "code", "") or "")
    # Without a Twilio code in the body the SDK repeats the HTTP status as the code.
    code = int(raw) if raw.isascii() and raw.isdigit() and int(raw) >= 1000 else None
    reason = ERROR_REASONS.get(code, "provider_error") if code is not None else "provider_error"
    what = f"error {code}" if code is not None else "an error"
    if status >= 500:
        # A server error after the request was read: Twilio (or a proxy in front of
        # it) may have created the message before failing. Not retried.
        reason = UNKNOWN_OUTCOME
    # Twilio's own message is left out: it can quote the number or the request.
    return DeliveryError(reason, f"Twilio returned {what} (HTTP {status})", provider_code=code)
