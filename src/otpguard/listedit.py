"""Editing the block and allow lists: what ``otpguard numbers block/allow/unblock/list``
and ``/v1/admin/numbers`` share (the entries themselves: ``numberlists.py``).

Every change is one store operation and one event (``number.blocked``,
``number.allowed``, ``number.unblocked``) with the pattern masked, who made it, the
expiry and the note (long digit runs masked). A listing merges the run-time entries
with the configured ones (``source=config``); removing a configured entry is refused
with the setting to edit, since the configuration is what seeds every instance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .codes import Keyring
from .config import Settings
from .errors import Conflict, InvalidRequest, NotFound
from .events import Event, EventType, new_event_id
from .numberlists import (
    EntryRequest,
    Kind,
    ListEntry,
    config_entries,
    mask_note,
    mask_pattern,
    parse_pattern,
)
from .phone import DestinationPolicy, parse
from .stores.base import Store

Emit = Callable[..., Awaitable[None]]
EVENT_OF: dict[Kind, EventType] = {
    "block": EventType.NUMBER_BLOCKED,
    "allow": EventType.NUMBER_ALLOWED,
}


@dataclass(frozen=True)
class Change:
    entry: ListEntry
    replaced: ListEntry | None = None  # the live entry the change replaced or removed
    shadowed_by_config: ListEntry | None = None  # a configured entry that still applies


class ListEditor:
    """The lists of one store, as the settings seed them. ``emit`` stores and logs
    events (``Verifier.emit``); ``clock`` gives ``now``."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        keyring: Keyring,
        policy: DestinationPolicy,
        *,
        emit: Emit,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.configured = config_entries(policy.blocklist, policy.allowlist)
        self.emit = emit
        self.clock = clock

    def _configured(self, pattern: str) -> ListEntry | None:
        return next((x for x in self.configured if x.pattern == pattern), None)

    async def add(
        self,
        raw: str,
        kind: Kind,
        *,
        by: str,
        note: str | None = None,
        duration: str | None = None,
        until: str | None = None,
    ) -> Change:
        """Add (or replace) the run-time entry for ``raw``; InvalidRequest names what
        is wrong with the input, NumberListFull says the lists are full."""
        now = self.clock()
        entry = EntryRequest(raw, kind, note, duration, until).validated(
            now, default_region=self.settings.default_region, created_by=by
        )
        previous = await self.store.put_list_entry(entry, now, self.settings.number_list_max)
        await self.emit(self._event(EVENT_OF[kind], now, entry, previous))
        return Change(entry, previous, self._configured(entry.pattern))

    async def remove(self, raw: str, *, by: str) -> Change:
        """Remove the run-time entry for ``raw``, whatever its kind."""
        now = self.clock()
        pattern = parse_pattern(raw, self.settings.default_region)
        removed = await self.store.delete_list_entry(pattern, now)
        configured = self._configured(pattern)
        if removed is None:
            if configured is not None:
                raise Conflict(
                    "configured",
                    f"{pattern} is in {configured.note} (the configuration), not a run-time "
                    "entry: remove it there and restart the instances",
                )
            raise NotFound(f"no run-time block or allow entry for {pattern}")
        event = self._event(EventType.NUMBER_UNBLOCKED, now, removed, None, by=by)
        await self.emit(event)
        return Change(removed, removed, configured)

    async def entries(self) -> list[ListEntry]:
        """The run-time entries, newest first, then the configured ones."""
        return [*await self.runtime_entries(), *self.configured]

    async def runtime_entries(self) -> list[ListEntry]:
        """The live run-time entries (``otpguard numbers``, /v1/admin/numbers), newest first."""
        return await self.store.list_entries(self.clock())

    async def counts(self) -> dict[str, dict[str, int]]:
        """``{"runtime": {"block": n, "allow": m}, "config": {...}}``."""
        runtime = await self.store.count_list_entries(self.clock())
        config = {k: sum(1 for x in self.configured if x.kind == k) for k in ("block", "allow")}
        return {"runtime": runtime, "config": config}

    def _event(
        self,
        type_: EventType,
        now: float,
        entry: ListEntry,
        previous: ListEntry | None,
        *,
        by: str | None = None,
    ) -> Event:
        details: dict[str, Any] = {
            "kind": entry.kind,
            "by": by or entry.created_by,
            "expires_at": entry.expires_at,
            "note": mask_note(entry.note),
        }
        if previous is not None and type_ is not EventType.NUMBER_UNBLOCKED:
            details["replaced"] = previous.kind
        number_hash = country = None
        try:  # a whole number: grouped with its other events, as every number is
            number = parse(entry.pattern, self.settings.default_region)
        except InvalidRequest:
            number = None
        if number is not None and number.e164 == entry.pattern:
            number_hash = self.keyring.keyed_hash("number", number.e164)
            country = number.region
        return Event(
            type=type_.value,
            ts=now,
            id=new_event_id(now),
            number_masked=mask_pattern(entry.pattern),
            number_hash=number_hash,
            country=country,
            details=details,
        )
