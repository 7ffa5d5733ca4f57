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
import functools
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from .clock import Clock, system_clock
from .config import Settings
from .models import Verification
from .service import Verifier, open_verifier

__all__ = ["SyncVerifier", "open_sync_verifier"]

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[Verifier, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncVerifier, P], T]:
    """``Verifier.method`` for a thread that blocks: the same arguments, the same
    docstring, run on the engine's loop until it finishes."""

    @functools.wraps(method)
    def blocking(self: SyncVerifier, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.verifier, *args, **kwargs))

    return blocking


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

    # -- the Verifier's operations: each is the Verifier's own, run to its end ----------

    start = _blocking(Verifier.start)
    resend = _blocking(Verifier.resend)
    check = _blocking(Verifier.check)
    cancel = _blocking(Verifier.cancel)
    get = _blocking(Verifier.get)
    purge = _blocking(Verifier.purge)

    def attempts_remaining(self, v: Verification) -> int:
        return self.verifier.attempts_remaining(v)

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
