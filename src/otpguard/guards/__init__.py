"""The send path as a pipeline of guards.

Each guard has one job. It says which flags it needs read (``flag_keys``), may
refuse on what was read (``check``), and says what the send must count
(``rules``: rate windows; ``buckets``: admission). The engine reads every
guard's flags in one store call, runs the checks in order, then hands every
rule and bucket to one atomic ``Store.admit``; a refusal there is turned into
an answer by the guard that owns the refusing key (``refusal``). The engine
knows no rule by name.

Shadow mode is :class:`Shadow`, a wrapper around any guard: its refusals become
``fraud.shadow`` events and its rules are recorded but never refuse.

================== ==================================================== ============
guard              job                                                  refuses with
================== ==================================================== ============
DestinationGuard   country, number type, block and allow lists;         403
                   email: allowed, disposable domains (email_policy.py)
DevelopmentGuard   live credentials in development reach listed numbers 403
                   (email: reserved and listed domains or addresses)
UndeliverableGuard numbers the provider recently could not reach        403
SuspensionGuard    prefixes/countries suspended on low conversion       403 (opt-in)
LimitGuard         per number or mailbox, IP, network, account; caps    429
SequentialGuard    one IP or network walking a number range             403
AdmissionGuard     shared capacity paid for in conversions              429 / 428
================== ==================================================== ============

Phone-only guards (sequential numbers, country budgets, number blocks) pass an
email address by; an address is judged by its domain instead (limits,
admission, the conversion watch).
"""

from __future__ import annotations

from .admission import BLOCK_DIGITS, AdmissionGuard, scope_buckets, scope_of
from .base import Guard, Refusal, SendContext, Shadow
from .destination import DestinationGuard, DevelopmentGuard, UndeliverableGuard, undeliverable_key
from .rates import BudgetGuard, LimitGuard, SequentialGuard
from .suspension import SuspensionGuard, load_figures, subjects, suspension_key

__all__ = [
    "BLOCK_DIGITS",
    "AdmissionGuard",
    "BudgetGuard",
    "DestinationGuard",
    "DevelopmentGuard",
    "Guard",
    "LimitGuard",
    "Refusal",
    "SendContext",
    "SequentialGuard",
    "Shadow",
    "SuspensionGuard",
    "UndeliverableGuard",
    "load_figures",
    "scope_buckets",
    "scope_of",
    "subjects",
    "suspension_key",
    "undeliverable_key",
]
