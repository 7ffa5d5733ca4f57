"""The storage contract.

A handful of domain operations, each atomic in every backend (a transaction in
SQL, a Lua script or MULTI/EXEC in Redis), instead of a key-value API. Every
operation takes ``now`` from the caller's injected clock. Backend errors are
translated to :class:`otpguard.errors.StorageError` at the boundary.

``tests/contracts/`` holds the suite every backend must pass unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ClassVar, TypeVar

from ..errors import StorageError
from ..events import Event
from ..models import AttemptTicket, Bucket, RateDecision, RateRule, Status, Verification
from ..numberlists import ListEntry
from .decisions import FLAGS_SET as FLAGS_SET
from .decisions import allowed_decision as allowed_decision
from .decisions import hit_rules as hit_rules
from .decisions import must_leave as must_leave
from .decisions import refusal as refusal
from .opening import CheckClosed, CheckOpened, CheckOpening, Judge, in_steps, open_in_steps
from .records import Alert as Alert
from .records import ApiKey as ApiKey
from .records import EventCount as EventCount
from .records import EventQuery as EventQuery
from .records import RefusalTally as RefusalTally
from .records import ServiceRecord as ServiceRecord
from .records import ShellRecords  # the service records and sign-outs of the contract
from .settlement import Plan, Settlement


@dataclasses.dataclass(frozen=True)
class Started:
    """What an admitted start records with its admission (:meth:`Store.admit`)."""

    verification: Verification
    events: tuple[Event, ...] = ()
    #: Flags the start was judged as unset: one set (or expired, not yet purged) when
    #: the admission runs, and nothing is recorded: ``FLAGS_SET`` (judge it again).
    unless_flags: tuple[str, ...] = ()
    plan: Plan | None = None  # kept with the row where ``Store.judges_checks``


_T = TypeVar("_T")
_TRANSLATED = "__otpguard_translated__"


def _translating(
    op: str, fn: Callable[..., Coroutine[Any, Any, _T]]
) -> Callable[..., Coroutine[Any, Any, _T]]:
    """``fn`` with its backend errors turned into StorageError by the store's own
    :meth:`Store.backend_error`; a StorageError passes as it is."""

    @functools.wraps(fn)
    async def translated(self: Store, *args: Any, **kwargs: Any) -> _T:
        try:
            return await fn(self, *args, **kwargs)
        except StorageError:
            raise
        except Exception as exc:
            reason = self.backend_error(exc)
            if reason is None:
                raise
            raise StorageError(f"{self.backend} store: {op} failed ({reason})") from exc

    setattr(translated, _TRANSLATED, True)
    return translated


class Store(ShellRecords, abc.ABC):
    """Base class for every backend. Subclasses implement each operation atomically.

    Error translation is applied once, here, to every public coroutine method a
    subclass or its mixins define (``__init_subclass__``): a backend says which
    exceptions are its own in :meth:`backend_error`, and names itself in
    ``backend``. Messages name the operation and the error class, never SQL, keys
    or values."""

    url: str = ""
    backend: ClassVar[str] = "store"
    #: Compares a check's presented tags, all in one call (``CheckOpening.presented``).
    judges_checks: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in dir(cls):
            if name.startswith("_"):
                continue
            fn = inspect.getattr_static(cls, name)
            if inspect.iscoroutinefunction(fn) and not getattr(fn, _TRANSLATED, False):
                setattr(cls, name, _translating(name, fn))

    def backend_error(self, exc: Exception) -> str | None:
        """The reason to report if ``exc`` is this backend's own failure (a driver
        error, a lost connection), else None: the exception is then not translated
        (a bug stays a bug). Called once per failed operation; a backend may note the
        failure here (mark itself down, test its idle connections)."""
        return None

    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    async def aclose(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def health(self) -> None:
        """Raise StorageError when the store cannot serve."""

    # -- verifications -------------------------------------------------------

    @abc.abstractmethod
    async def create_verification(self, v: Verification) -> None:
        """Insert a new verification (durable once this returns)."""

    @abc.abstractmethod
    async def get_verification(self, verification_id: str) -> Verification | None: ...

    @abc.abstractmethod
    async def find_pending(self, to: str, now: float) -> Verification | None:
        """The newest pending, unexpired verification for an E.164 number."""

    @abc.abstractmethod
    async def list_pending(
        self, to: str, now: float, *, owner: str | None, limit: int, any_status: bool = False
    ) -> list[Verification]:
        """A number's pending, unexpired verifications, newest first (as :meth:`find_pending`
        orders them), at most ``limit``; only those whose ``owner`` is ``owner`` or None (made
        without an API key), unless ``owner`` is None. ``any_status``: whatever their status."""

    @abc.abstractmethod
    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        """Count one check *before* the code is compared, atomically.

        pending, unexpired, attempts < max  -> attempts += 1, COUNTED
        pending, expired                    -> status=expired, EXPIRED
        pending, attempts >= max            -> unchanged, LOCKED (no attempt left; the
                                               check that counted the last attempt
                                               approves or locks; an in-flight right
                                               code must still be able to approve)
        anything else                       -> unchanged, NOT_PENDING
        unknown id                          -> None
        """

    @abc.abstractmethod
    async def approve(self, verification_id: str, now: float, *, code_hash: str) -> bool:
        """pending, unexpired and still holding ``code_hash`` (the tag the code was
        compared with) -> approved; True for exactly one caller. A resend that swapped
        in a new tag after the comparison makes this False: the old code approves
        nothing."""

    @abc.abstractmethod
    async def settle(self, s: Settlement) -> bool:
        """Approve and do what follows a right code, in one atomic operation
        (``settlement.py``); True for exactly one caller of a verification."""

    async def open_check(self, o: CheckOpening) -> CheckOpened:
        """A check by id's read, reservation and attempt, in one atomic operation
        (``opening.py``). This default runs them as three operations, each atomic on
        its own (what a backend without one step does: Redis Cluster, whose keys lie
        in several slots); the others override it."""
        return await open_in_steps(self, o)

    async def check_by_id(self, o: CheckOpening, judge: Judge) -> CheckClosed:
        """A whole check by id (``opening.py``): opened, judged, the verdict carried
        out, in one atomic operation where the backend can (SQLite). This default runs
        the operations they are, each atomic on its own (``opening.in_steps``)."""
        return await in_steps(self, o, judge)

    @abc.abstractmethod
    async def lock_if_exhausted(self, verification_id: str, max_attempts: int, now: float) -> bool:
        """pending with attempts >= max -> max_attempts_reached; True if it changed."""

    @abc.abstractmethod
    async def replace_code(
        self,
        verification_id: str,
        key_id: str,
        code_hash: str,
        now: float,
        expires_at: float,
        resend_available_at: float,
        *,
        replaces: str,
    ) -> Verification | None:
        """Resend: swap in a new code tag if pending, unexpired, out of cooldown and
        still holding ``replaces``, the tag the caller read (a compare-and-set: of two
        resends that read the same tags, one wins and the other is refused, so no code
        that was sent is silently dropped from a ``keep_earlier`` list).

        Increments ``sends``; never touches ``attempts``. None when refused.
        """

    @abc.abstractmethod
    async def transition(
        self, verification_id: str, from_statuses: Sequence[Status], to: Status, now: float
    ) -> Verification | None:
        """Move to ``to`` if the current status is one of ``from_statuses``; None otherwise."""

    # -- rate windows (sliding logs) -------------------------------------------

    @abc.abstractmethod
    async def hit(
        self, rules: Sequence[RateRule], now: float, cost: int = 1, record: bool = True
    ) -> RateDecision:
        """All or nothing: if every rule has room for ``cost`` more events in its
        window (count + cost <= limit), record them (unless ``record`` is False:
        a peek) under every rule and allow; otherwise record nothing and refuse
        naming the first rule (in order) that is full, with ``retry_after`` the
        seconds until it has room (when the oldest counted event leaves the
        window). An empty ``rules`` is allowed. ``count`` in the decision is the
        refusing rule's count, or the highest count/limit rule's count after
        recording when allowed."""

    @abc.abstractmethod
    async def release(self, keys: Sequence[str], at: float, cost: int = 1) -> None:
        """Give back a reservation that :meth:`hit` recorded at ``at``: under each of
        ``keys``, remove ``cost`` entries recorded at exactly ``at`` (entries at one
        time are alike, so any of them will do), atomically per key; a key with
        fewer such entries loses the ones it has, and nothing else is touched. (A
        wrong-code cap is reserved before the comparison and given back when the
        code was right; only lowering counts, keys may be released one by one.)"""

    @abc.abstractmethod
    async def admit(
        self,
        rules: Sequence[RateRule],
        buckets: Sequence[Bucket],
        now: float,
        *,
        pressure: float | None = None,
        force: bool = False,
        start: Started | None = None,
    ) -> RateDecision:
        """A send's whole admission in one atomic operation, all or nothing.

        First the rate ``rules``, exactly as :meth:`hit` judges them (with
        ``record_only`` and ``skip_if_seen``); then every bucket, decayed to ``now``
        (``admission.decayed``): a send fits when ``admission.fits``. With
        ``pressure`` p, a send that fits but not under the soft line
        (``fits(..., pressure=p)``) is refused with ``challenge=True``. With
        ``force`` (a passed challenge), the buckets are recorded but not judged.
        Refusals record nothing and name the rule or bucket (``rule``, ``key``,
        ``retry_after``); an admitted send is recorded under every rule and its
        level raised by one in every bucket.

        ``start`` (a start's; a resend passes none): the verification and its events,
        written as :meth:`create_verification` and :meth:`add_events` write them (counts
        included) in the same operation when admitted, never when refused (Redis
        Cluster: after the cross-slot admission, slot by slot)."""

    @abc.abstractmethod
    async def credit(self, buckets: Sequence[Bucket], refund: int, now: float) -> None:
        """An approval, atomically in every bucket: the level falls by ``refund``
        (not below zero) and ``earned`` rises by one (``admission.after_approval``)."""

    @abc.abstractmethod
    async def count(self, key: str, window: int, now: float) -> int:
        """Events recorded under ``key`` in the last ``window`` seconds."""

    async def counts(self, queries: Sequence[tuple[str, int]], now: float) -> list[int]:
        """``count`` for several ``(key, window)`` pairs, in order, in one round trip
        where the backend can (this default asks one by one)."""
        return [await self.count(key, window, now) for key, window in queries]

    # -- flags (suspensions, undeliverable numbers, ...) -----------------------

    @abc.abstractmethod
    async def set_flag(self, key: str, value: str, until: float) -> None: ...

    @abc.abstractmethod
    async def get_flag(self, key: str, now: float) -> str | None:
        """The flag's value if set and ``until`` is still in the future."""

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        """The live flags among ``keys`` (missing or expired ones are absent), in one
        round trip where the backend can (this default asks one by one)."""
        out = {}
        for key in keys:
            value = await self.get_flag(key, now)
            if value is not None:
                out[key] = value
        return out

    # -- block and allow lists (numberlists.py) ---------------------------------
    # Each entry is the flag ``numlist:<pattern>`` (value ``numberlists.encode``,
    # ``until`` its expiry or FOREVER): get_flags reads them on the send path.

    @abc.abstractmethod
    async def put_list_entry(self, entry: ListEntry, now: float, cap: int) -> ListEntry | None:
        """Add or replace the entry for ``entry.pattern``, atomically with the cap:
        when ``cap`` live entries exist and none of them is this pattern's, raise
        ``NumberListFull`` and change nothing. Returns the live entry it replaced."""

    @abc.abstractmethod
    async def delete_list_entry(self, pattern: str, now: float) -> ListEntry | None:
        """Remove the entry for ``pattern``; the live entry removed, or None."""

    @abc.abstractmethod
    async def list_entries(self, now: float) -> list[ListEntry]:
        """Every live entry, newest ``created_at`` first (pattern order for ties)."""

    @abc.abstractmethod
    async def count_list_entries(self, now: float) -> dict[str, int]:
        """Live entries per kind: ``{"block": n, "allow": m}``."""

    # -- events ---------------------------------------------------------------

    @abc.abstractmethod
    async def add_events(self, events: Sequence[Event]) -> None:
        """Store events (ids already set), in one transaction."""

    @abc.abstractmethod
    async def list_events(self, query: EventQuery) -> list[Event]:
        """Newest first, filtered; ``limit`` at most."""

    @abc.abstractmethod
    async def tally_refusal(self, minute: int, key: str, example: Event) -> int:
        """Count one refusal under ``(minute, key)``, atomically, and return the count
        after it: 1 for the first (which stores ``example`` with the tally), n for the
        n-th; ``last_ts`` becomes the newest ``example.ts`` seen. From the second on,
        the same operation raises the event counts of ``example``'s kinds in
        ``minute`` by one (the first is counted when it is stored as an event)."""

    # -- event counts (counters.py): add_events raises them in its transaction ---

    @abc.abstractmethod
    async def list_event_counts(
        self, since: float, until: float, families: Sequence[str]
    ) -> list[EventCount]:
        """The counts of the kinds of ``families`` in every minute that starts in
        ``[since, until)``, in no order."""

    async def top_event_counts(
        self, family: str, since: float, until: float, limit: int
    ) -> list[tuple[str, int]]:
        """The ``limit`` kinds of ``family`` with the most events over the minutes of
        :meth:`list_event_counts`, most first (equal counts by kind), summed where the
        backend can (this default sums here)."""
        totals: dict[str, int] = {}
        for row in await self.list_event_counts(since, until, (family,)):
            totals[row.kind] = totals.get(row.kind, 0) + row.count
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, limit)]

    @abc.abstractmethod
    async def list_refusal_tallies(self, since: float, until: float) -> list[RefusalTally]:
        """The tallies of the minutes that overlap ``[since, until)``, in no order."""

    # -- alerts ---------------------------------------------------------------

    @abc.abstractmethod
    async def put_alert(self, alert: Alert) -> None:
        """Insert or replace by id."""

    @abc.abstractmethod
    async def list_alerts(
        self, since: float | None = None, status: str | None = None
    ) -> list[Alert]:
        """Newest ``updated_at`` first."""

    # -- API keys -------------------------------------------------------------

    @abc.abstractmethod
    async def create_api_key(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    @abc.abstractmethod
    async def list_api_keys(self) -> list[ApiKey]: ...

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str, now: float) -> bool: ...

    # -- maintenance ----------------------------------------------------------

    @abc.abstractmethod
    async def purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        """Delete verifications expired more than ``verification_grace`` ago, rate
        entries older than ``rate_horizon`` seconds, events, refusal tallies and event
        counts older than ``event_horizon`` seconds, flags past their time. Returns rows removed."""

    async def scheduled_purge(
        self, now: float, verification_grace: float, rate_horizon: float, event_horizon: float
    ) -> int:
        """What the maintenance job runs every ``purge_interval``: ``purge`` by default.
        A backend that expires most of its data by itself may do less here."""
        return await self.purge(now, verification_grace, rate_horizon, event_horizon)
