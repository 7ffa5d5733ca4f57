"""What a check by id does before its comparison, as one atomic store call
(``Store.open_check``).

1. read the verification. Missing, or another API key's (``owner`` is set and the
   verification's owner is neither it nor None): ``NOT_FOUND``, nothing counted;
2. a code of another length than the verification's: ``MALFORMED``, nothing counted;
3. reserve one wrong code, as ``Store.hit`` does, under ``number_rules`` (each key a
   prefix that the verification's number completes: the caller does not know the
   number before step 1) and ``ip_rules``. Refused: ``REFUSED`` with the decision,
   nothing else counted;
4. count the attempt, as ``Store.record_attempt`` does: ``OPENED`` with its ticket
   (None when the verification is gone, which only a backend without one atomic
   step can see).

The engine compares the code with the ticket's tags afterwards and settles (an
approval, ``settlement.py``) or records the failure.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..models import AttemptTicket, RateDecision, RateRule, Verification


class Opened(enum.StrEnum):
    NOT_FOUND = "not_found"
    MALFORMED = "malformed"
    REFUSED = "refused"
    OPENED = "opened"


@dataclass(frozen=True)
class CheckOpening:
    """One check by id's first step (this module's docstring)."""

    verification_id: str
    owner: str | None
    code_length: int
    number_rules: Sequence[RateRule]  # keys completed by the verification's number
    ip_rules: Sequence[RateRule]
    max_attempts: int
    now: float

    def visible(self, v: Verification | None) -> Verification | None:
        """``v`` if this check may see it (step 1), else None."""
        if v is None or (self.owner is not None and v.owner not in (self.owner, None)):
            return None
        return v

    def rules(self, number: str) -> list[RateRule]:
        """The reservation's rules for the verification's ``number`` (step 3)."""
        completed = [replace(r, key=r.key + number) for r in self.number_rules]
        return [*completed, *self.ip_rules]


@dataclass(frozen=True)
class CheckOpened:
    outcome: Opened
    verification: Verification | None = None  # as read (NOT_FOUND: None)
    refusal: RateDecision | None = None  # REFUSED
    ticket: AttemptTicket | None = None  # OPENED (None: gone in between)
