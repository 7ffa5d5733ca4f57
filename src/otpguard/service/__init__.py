"""The Verifier: start / resend / check / cancel / get.

The only place where policy meets storage and delivery. The HTTP API, the CLI
and embedded users are thin shells over :class:`Verifier`.

Order of a send, each refusal before any message leaves (``send.py``)::

    parse number -> destination policy -> development guard -> undeliverable memory
    -> fraud rules -> rate limits (atomic, all or nothing) -> store -> transport

The email channel runs the same path with an address for the number
(``destinations.py``: parsed by ``email_address.py``, judged by ``email_policy.py``,
the MX check first when it is on) and its own transport (``email_transport``).

Order of a check (``check.py``)::

    well-formed code -> find verification -> reserve a wrong code under the
    failed-check caps (atomic, all or nothing) -> count the attempt (atomic, before
    comparing) -> compare (constant time) -> approve (atomic, exactly once, only the
    tag compared) and give the reservation back | keep it, lock at the cap

If the store cannot answer, nothing is sent and nothing is approved
(``StorageError``, HTTP 503).
"""

from __future__ import annotations

from ..events import EventListener
from .base import (
    DELIVERY_REPORT_WINDOW,
    NO_MATCH,
    PENDING_PER_CHECK,
    UNDELIVERABLE_REASONS,
    UNDELIVERED_STATUSES,
    VERIFICATION_GRACE,
    CheckResult,
    DeliveryReport,
    Selector,
    build_guards,
    new_verification_id,
)
from .verifier import Verifier, open_verifier

__all__ = [
    "DELIVERY_REPORT_WINDOW",
    "NO_MATCH",
    "PENDING_PER_CHECK",
    "UNDELIVERABLE_REASONS",
    "UNDELIVERED_STATUSES",
    "VERIFICATION_GRACE",
    "CheckResult",
    "DeliveryReport",
    "EventListener",
    "Selector",
    "Verifier",
    "build_guards",
    "new_verification_id",
    "open_verifier",
]
