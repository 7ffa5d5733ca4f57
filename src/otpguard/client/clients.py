""":class:`Client` (blocking) and :class:`AsyncClient`: one set of methods, two kinds of I/O.

:class:`_Api` writes each method once: it builds the :class:`~.calls.Call` and
hands it to ``_send``, which the sync client runs at once and the async one
returns as a coroutine (``await client.start(...)``). The type parameters say
what a method returns in each: the result, or a coroutine of it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Generic, Self, TypeVar, Unpack

import httpx

from ..models import Channel, StartArgs
from .calls import (
    Call,
    CheckArgs,
    cancel_call,
    check_call,
    get_call,
    resend_call,
    start_call,
)
from .errors import unreachable
from .http import DEFAULT_TIMEOUT, connection, result
from .results import CheckOutcome, VerificationInfo

T = TypeVar("T")
TransportT = TypeVar("TransportT")
InfoT = TypeVar("InfoT")
OutcomeT = TypeVar("OutcomeT")


class _Api(Generic[TransportT, InfoT, OutcomeT]):
    """The API's methods, for either client."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: TransportT | None = None,
    ) -> None:
        self.base_url, headers = connection(base_url, api_key)
        self._connect(transport, base_url=self.base_url, headers=headers, timeout=timeout)

    def _connect(self, transport: TransportT | None, **options: Any) -> None:
        """Open the connection pool: httpx's client with these ``options``."""
        raise NotImplementedError

    def _info(self, call: Call[VerificationInfo]) -> InfoT:
        raise NotImplementedError

    def _outcome(self, call: Call[CheckOutcome]) -> OutcomeT:
        raise NotImplementedError

    def start(
        self,
        to: str,
        channel: str | Channel = Channel.SMS,
        *,
        client_ip: str | None = None,
        locale: str | None = None,
        **args: Unpack[StartArgs],
    ) -> InfoT:
        """Send a code to ``to``. Pass your end user's IP as ``client_ip``. After a
        ``ChallengeRequired``, repeat the start with the CAPTCHA's ``challenge_token``.
        ``purpose`` (default login; for ``transaction`` also ``amount`` in
        ``currency`` and ``payee``) is bound into the code: its check names the same."""
        return self._info(start_call(to, channel, args, client_ip=client_ip, locale=locale))

    def resend(self, verification_id: str, *, client_ip: str | None = None) -> InfoT:
        """A fresh code; the previous one stops working. ``RateLimited("cooldown")`` if early."""
        return self._info(resend_call(verification_id, client_ip))

    def check(
        self,
        code: str | None = None,
        /,
        *,
        verification_id: str | None = None,
        to: str | None = None,
        client_ip: str | None = None,
        **args: Unpack[CheckArgs],
    ) -> OutcomeT:
        """Check a typed code, by ``verification_id`` or by number (``to``: its newest
        pending one), naming what the start named (``purpose``, ``amount``,
        ``currency``, ``payee``: another one is a wrong code). The arguments are
        :meth:`Verifier.check`'s: ``check(code, verification_id=v.id)``.

        Deprecated: ``check(verification_id, code=...)``, the order of 0.1, still
        works and warns (``DeprecationWarning``) until the next release."""
        return self._outcome(check_call(code, verification_id, to, client_ip, args))

    def cancel(self, verification_id: str) -> InfoT:
        return self._info(cancel_call(verification_id))

    def get(self, verification_id: str) -> InfoT:
        return self._info(get_call(verification_id))


class Client(_Api[httpx.BaseTransport, VerificationInfo, CheckOutcome]):
    """Blocking client; thread-safe (one connection pool). Use ``with`` or call ``close()``.

    ``base_url`` defaults to ``$OTPGUARD_URL`` (else http://127.0.0.1:8000) and
    ``api_key`` to ``$OTPGUARD_API_KEY``."""

    def _connect(self, transport: httpx.BaseTransport | None, **options: Any) -> None:
        self._http = httpx.Client(transport=transport, **options)

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, json=call.json)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return result(call, response)

    _info = _outcome = _send

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(
    _Api[
        httpx.AsyncBaseTransport,
        Coroutine[Any, Any, VerificationInfo],
        Coroutine[Any, Any, CheckOutcome],
    ]
):
    """The same methods for asyncio, awaited. Use ``async with`` or ``await aclose()``."""

    def _connect(self, transport: httpx.AsyncBaseTransport | None, **options: Any) -> None:
        self._http = httpx.AsyncClient(transport=transport, **options)

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, json=call.json)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return result(call, response)

    _info = _outcome = _send

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
