"""The records of the admin data the stores keep (API keys, alerts, refusal tallies,
event counts, the shells' service records) and the event query; ``base.py``
re-exports them."""

from __future__ import annotations

import abc
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
class ServiceRecord:
    """A shell's service, kept for good under its account (a /v2 service: ``id`` its
    SID, ``account`` the API key's account SID, ``document`` its JSON): the store
    keeps the document whole, never reads into it, and lists an account's in the
    order they were first kept. ``Store.put_service`` keeps at most ``cap`` per account."""

    id: str
    account: str
    document: str
    created_at: float


class ShellRecords(abc.ABC):
    """The shells' part of the storage contract (``base.Store`` has it): the service
    records, and the dashboard's sign-outs."""

    @abc.abstractmethod
    async def put_service(self, record: ServiceRecord, cap: int) -> bool:
        """Keep ``record`` (replacing the one of its id), atomically: a new one only
        while its account has fewer than ``cap``. False (nothing kept) when it has."""

    @abc.abstractmethod
    async def get_service(self, service_id: str) -> ServiceRecord | None: ...

    @abc.abstractmethod
    async def list_services(self, account: str) -> list[ServiceRecord]:
        """The account's records in the order they were first kept (a replaced one
        keeps its place)."""

    @abc.abstractmethod
    async def delete_service(self, service_id: str) -> bool:
        """Whether there was one to delete."""

    @abc.abstractmethod
    async def sign_out(self, session_id: str, until: float) -> None:
        """End the session ``session_id`` (a dashboard session's nonce) until ``until``,
        when it would have expired anyway: purged after that."""

    @abc.abstractmethod
    async def signed_out(self, session_id: str, now: float) -> bool:
        """Whether ``session_id`` was signed out (and ``now`` is before its ``until``)."""


#: Where releases before the service records kept each /v2 service: a flag
#: ``SERVICE_FLAG_PREFIX + SID``, its value the document (with ``account_sid`` and
#: ``created_at``), live while its ``until`` is ``SERVICE_FLAG_FOREVER`` (a deleted
#: one was given the time of its deletion). Each store copies them once (its migration).
SERVICE_FLAG_PREFIX = "verify_compat:service:"
SERVICE_FLAG_FOREVER = 253402300799.0  # 9999-12-31T23:59:59Z
#: Where they kept each dashboard sign-out: a flag ``SIGN_OUT_FLAG_PREFIX + nonce``,
#: until the session would have expired.
SIGN_OUT_FLAG_PREFIX = "dashboard:signed_out:"


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
