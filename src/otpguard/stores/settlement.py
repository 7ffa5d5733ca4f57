"""What follows a right code, as one atomic store call (``Store.settle``).

The engine decides what an approval sets off; the store does all of it at once:

1. approve, as ``Store.approve`` does (pending, unexpired, still holding the tags the
   code was compared with; or those tags plus a kept resend's, ``code_hash + " "``
   starting the stored ones). Not approved by this call: nothing else happens;
2. give back the wrong-code reservation: one entry at ``now`` under each ``reserved``;
3. store ``events`` with their per-minute counts (as ``add_events``);
4. unless a live allow entry of the number lists matches ``number`` (None: no list is
   read): ``credit`` the ``buckets`` by ``refund`` unless a flag among ``trusted`` is
   live (the number's hash under every key, newest first), set ``trusted[0]`` until
   ``trusted_until`` (None: not set), and record one entry under each ``counters`` rule's key.

Steps 2-4 are bookkeeping: if they fail, the approval still commits (the failure is
logged) and ``settle`` answers True, so that the answer tells the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import numberlists
from ..events import Event
from ..models import Bucket, RateRule
from ..tags import SEP

log = logging.getLogger("otpguard.store")


@dataclass(frozen=True)
class Settlement:
    """One approval and its bookkeeping (this module's docstring)."""

    verification_id: str
    now: float
    code_hash: str
    reserved: Sequence[str] = ()
    events: Sequence[Event] = ()
    number: str | None = None
    buckets: Sequence[Bucket] = ()
    refund: int = 0
    trusted: Sequence[str] = ()
    trusted_until: float | None = None
    counters: Sequence[RateRule] = ()  # record-only: one entry under each key

    def holds(self, stored_hash: str) -> bool:
        """Whether the stored tags are the ones compared (or those plus a kept resend's)."""
        return stored_hash == self.code_hash or stored_hash.startswith(self.code_hash + SEP)

    def flag_keys(self) -> list[str]:
        """The flags step 4 reads: the trusted keys, then the number lists' entries."""
        listed = [] if self.number is None else numberlists.flag_keys(self.number)
        return list(dict.fromkeys([*self.trusted, *listed]))

    def listed(self, flags: Mapping[str, str]) -> bool:
        """An allow entry matches: the number was never counted, nothing to settle."""
        return self.number is not None and numberlists.allowed_by(flags, self.number) is not None

    def credits(self, flags: Mapping[str, str]) -> bool:
        """The buckets are credited: a trusted number's sends were not counted."""
        return bool(self.buckets) and not any(k in flags for k in self.trusted)


@dataclass(frozen=True)
class Plan:
    """What a verification's check events and approval need of its number, worked out
    by its start (the engine's policy, as ``Settlement`` has it) and kept with the row
    by a store that judges a check by id itself (``Store.judges_checks``), which learns
    the number only when it reads the row: the masked number and its keyed hash for
    the events; unless the number is not counted (allowlisted, or no country), the
    allow entries' flag keys (``listed``), the buckets to credit, the trusted flags
    (newest key first) and the approval counters' keys. Made before a key is added,
    it keeps the older hashes (a verification lives for ``code_ttl``)."""

    number_masked: str
    number_hash: str
    listed: Sequence[str] = ()
    buckets: Sequence[Bucket] = ()
    trusted: Sequence[str] = ()
    counters: Sequence[RateRule] = ()  # record-only

    def to_json(self) -> dict[str, Any]:
        """As the row keeps it (``postgres_check.py`` reads these names)."""
        buckets = list({b.key: b for b in self.buckets}.values())
        return {
            "m": self.number_masked,
            "h": self.number_hash,
            "listed": list(self.listed),
            "buckets": [b.key for b in buckets],
            "taus": [b.tau for b in buckets],
            "trusted": list(self.trusted),
            "counters": list(dict.fromkeys(r.key for r in self.counters)),
        }


def bookkeeping_failed(verification_id: str) -> None:
    log.warning("approval of %s recorded; its bookkeeping failed", verification_id)
