"""The records of the admin data the stores keep (API keys, alerts, refusal tallies,
event counts) and the event query; ``base.py`` re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import Event


@dataclass(frozen=True)
class ApiKey:
    id: str  # public part, shown in lists
    name: str
    key_hash: str  # keyed hash of the whole key
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class Alert:
    id: str  # rule + subject; one open incident per id
    rule: str
    subject: str
    status: str  # "open" | "resolved"
    opened_at: float
    updated_at: float
    resolved_at: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefusalTally:
    """The refusals of one kind (``key``) in one minute: how many, the newest one's
    time, and the fields of the first one they are counted under (``refusals.py``)."""

    minute: int  # the minute's start, epoch seconds
    key: str
    count: int
    last_ts: float
    example: Event


@dataclass(frozen=True)
class EventCount:
    """How many events of one kind (``counters.kinds_of``) one minute holds."""

    minute: int  # the minute's start, epoch seconds
    kind: str
    count: int


@dataclass(frozen=True)
class EventQuery:
    """Which events ``Store.list_events`` returns, newest id first. ``number_hash``:
    one hash, or several (a number's hash under every key, ``Keyring.keyed_hashes``):
    an event with any of them matches; an empty tuple matches none."""

    types: tuple[str, ...] = ()
    number_hash: str | tuple[str, ...] | None = None
    client_ip: str | None = None
    country: str | None = None
    since: float | None = None
    until: float | None = None
    before_id: str | None = None  # pagination cursor: events older than this id
    limit: int = 100

    @property
    def number_hashes(self) -> tuple[str, ...] | None:
        """``number_hash`` as a tuple (None: any number)."""
        if self.number_hash is None or isinstance(self.number_hash, tuple):
            return self.number_hash
        return (self.number_hash,)
