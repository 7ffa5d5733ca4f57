"""The Verifier for synchronous code (Django, Flask, scripts), in-process, no server.

    from otpguard import load_settings
    from otpguard.sync import open_sync_verifier

    otp = open_sync_verifier(load_settings())      # once, at start-up
    v = otp.start("+447400123456", "sms", client_ip=request_ip)
    result = otp.check("123456", verification_id=v.id, client_ip=request_ip)
    otp.close()                                     # at shutdown (or use ``with``)

A thin wrapper, not a second Verifier (STYLE.md: no parallel sync and async trees):
one background thread runs an event loop that owns the async
:class:`~otpguard.service.Verifier`; each method submits the coroutine to that
loop and blocks until it finishes. Any number of request threads may share one
``SyncVerifier``. Errors are the Verifier's own (``RateLimited``, ...).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from .clock import Clock, system_clock
from .config import Settings
from .models import Channel, Verification
from .service import CheckResult, Verifier, open_verifier

__all__ = ["SyncVerifier", "open_sync_verifier"]

T = TypeVar("T")


class SyncVerifier:
    """Blocking facade over a :class:`Verifier`; opens it now, closes it on ``close()``."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.settings = verifier.settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="otpguard-engine", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._run(verifier.open())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this SyncVerifier is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncVerifier called from its own loop thread (use the Verifier)")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # -- the Verifier's operations ------------------------------------------------------

    def start(
        self,
        to: str,
        channel: str | Channel = Channel.SMS,
        client_ip: str | None = None,
        locale: str | None = None,
        *,
        challenge_token: str | None = None,
        account_id: str | None = None,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> Verification:
        """Send a code to ``to``; returns the verification (never the code). After a
        ``ChallengeRequired``, repeat it with the CAPTCHA's ``challenge_token``.
        ``purpose`` (and a transaction's ``amount``, ``currency``, ``payee``) as
        :meth:`Verifier.start`: the check names the same."""
        return self._run(
            self.verifier.start(
                to,
                channel,
                client_ip,
                locale,
                challenge_token=challenge_token,
                account_id=account_id,
                purpose=purpose,
                amount=amount,
                currency=currency,
                payee=payee,
            )
        )

    def resend(self, verification_id: str, client_ip: str | None = None) -> Verification:
        return self._run(self.verifier.resend(verification_id, client_ip))

    def check(
        self,
        code: str,
        *,
        verification_id: str | None = None,
        to: str | None = None,
        client_ip: str | None = None,
        purpose: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        payee: str | None = None,
    ) -> CheckResult:
        return self._run(
            self.verifier.check(
                code,
                verification_id=verification_id,
                to=to,
                client_ip=client_ip,
                purpose=purpose,
                amount=amount,
                currency=currency,
                payee=payee,
            )
        )

    def cancel(self, verification_id: str) -> Verification:
        return self._run(self.verifier.cancel(verification_id))

    def get(self, verification_id: str) -> Verification:
        return self._run(self.verifier.get(verification_id))

    def attempts_remaining(self, v: Verification) -> int:
        return self.verifier.attempts_remaining(v)

    def purge(self) -> int:
        """Delete expired verifications and old rate entries (run it every minute or so)."""
        return self._run(self.verifier.purge())

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self.verifier.aclose())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_sync_verifier(settings: Settings, *, clock: Clock = system_clock) -> SyncVerifier:
    """:func:`otpguard.open_verifier` for synchronous code: same settings, same checks."""
    return SyncVerifier(open_verifier(settings, clock=clock))
