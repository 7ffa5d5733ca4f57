"""Block and allow lists edited at run time, beside the configured ones.

``OTPGUARD_BLOCKLIST`` and ``OTPGUARD_ALLOWLIST`` seed the lists: their entries are
permanent, merged in memory (``DestinationPolicy``), listed with ``source=config``,
and removed only from the configuration. Entries added at run time
(``otpguard numbers block/allow``, ``POST /v1/admin/numbers``) have the same forms
(an E.164 number or a prefix, ``phone.normalize_pattern``), an optional expiry, a
note and who added them; every instance sharing the store applies them at its
next send, with no restart.

Storage: one store flag per entry, key ``numlist:<pattern>``, its ``until`` the
expiry (``FOREVER`` when there is none) and its value the entry as JSON. So the
send path reads the entries for a number and all its prefixes (``flag_keys``) in
the one flag read it already makes, and an expired entry stops applying by
itself and is deleted by the purge, like every flag. The store keeps the list
bounded (``OTPGUARD_NUMBER_LIST_MAX``) and answers ``number_list_full`` past it.

The numbers are stored in clear: an operator typed them and must be able to list
them (a block list nobody can read cannot be kept). They leave the store only
through the admin API and the CLI; events, logs and the dashboard carry them
masked (``mask_pattern``), and a note's long digit runs are masked in events.

Block wins over allow, as in the configured lists: an allow entry skips the fraud
rules and admission, never a block entry, the destination policy or the limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .errors import Conflict, InvalidRequest
from .events import mask_number
from .phone import normalize_pattern

Kind = Literal["block", "allow"]
KINDS: tuple[Kind, ...] = ("block", "allow")
KEY_PREFIX = "numlist:"
#: The first key after every ``numlist:`` key (``;`` follows ``:``): a key range.
KEY_END = "numlist;"
FOREVER = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the ``until`` of an entry with no expiry
MAX_NOTE = 200
MAX_BY = 80
_DURATION = re.compile(r"^(\d{1,7})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DIGIT_RUN = re.compile(r"\d{6,}")


@dataclass(frozen=True)
class ListEntry:
    pattern: str  # E.164 number or prefix, normalised
    kind: Kind
    note: str = ""
    created_by: str = ""
    created_at: float = 0.0
    expires_at: float | None = None  # None: until removed
    source: Literal["runtime", "config"] = "runtime"

    @property
    def until(self) -> float:
        """The flag's ``until``."""
        return FOREVER if self.expires_at is None else self.expires_at


class NumberListFull(Conflict):
    """The run-time lists hold ``OTPGUARD_NUMBER_LIST_MAX`` entries already."""

    def __init__(self, cap: int) -> None:
        super().__init__(
            "number_list_full",
            f"the block and allow lists hold {cap} entries already "
            "(OTPGUARD_NUMBER_LIST_MAX): remove some, or block a prefix instead",
        )


def flag_key(pattern: str) -> str:
    return KEY_PREFIX + pattern


def flag_keys(e164: str) -> list[str]:
    """The keys of every entry that could match ``e164``: the number and each prefix
    of it (``+4``, ``+44``, ... ``+447400123456``)."""
    return [flag_key(e164[:n]) for n in range(2, len(e164) + 1)]


def encode(entry: ListEntry) -> str:
    """The flag's value: the entry without its pattern (the key has it)."""
    data = {
        "kind": entry.kind,
        "note": entry.note,
        "by": entry.created_by,
        "at": entry.created_at,
        "exp": entry.expires_at,
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode(pattern: str, value: str, until: float | None = None) -> ListEntry | None:
    """The entry a flag holds; None for a value that is not one."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    exp = data.get("exp")
    expires_at = float(exp) if isinstance(exp, int | float) else None
    if expires_at is None and until is not None and until < FOREVER:
        expires_at = until
    return ListEntry(
        pattern=pattern,
        kind=data["kind"],
        note=str(data.get("note") or ""),
        created_by=str(data.get("by") or ""),
        created_at=float(data.get("at") or 0.0),
        expires_at=expires_at,
    )


def matching(flags: Mapping[str, str], e164: str) -> list[ListEntry]:
    """The live run-time entries among the flags read for ``e164`` (``flag_keys``)."""
    out = []
    for key in flag_keys(e164):
        raw = flags.get(key)
        if raw is not None:
            entry = decode(key[len(KEY_PREFIX) :], raw)
            if entry is not None:
                out.append(entry)
    return out


def blocked_by(flags: Mapping[str, str], e164: str) -> ListEntry | None:
    return next((x for x in matching(flags, e164) if x.kind == "block"), None)


def allowed_by(flags: Mapping[str, str], e164: str) -> ListEntry | None:
    return next((x for x in matching(flags, e164) if x.kind == "allow"), None)


def explain(info: dict[str, object], flags: Mapping[str, str], e164: str, *, exempt: bool) -> None:
    """``DestinationPolicy.explain``'s answer, in place, with the run-time entries among
    ``flags``: a block entry refuses every channel (unless ``exempt``: a Twilio magic
    number under test credentials), an allow entry makes the number allowlisted."""
    if allowed_by(flags, e164) is not None:
        info["allowlisted"] = True
    if not exempt and blocked_by(flags, e164) is not None:
        channels = info["channels"]
        assert isinstance(channels, dict)
        for name in channels:
            channels[name] = {"allowed": False, "reason": "blocklisted"}


# -- input ------------------------------------------------------------------------------


def parse_pattern(raw: str, default_region: str) -> str:
    if not isinstance(raw, str) or not 0 < len(raw) <= 32:
        raise InvalidRequest("'number' must be a number or prefix, like +447400 or +447400123456")
    try:
        pattern = normalize_pattern(raw, default_region)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return pattern


def parse_note(raw: str | None) -> str:
    note = (raw or "").strip()
    if len(note) > MAX_NOTE:
        raise InvalidRequest(f"'note' must be at most {MAX_NOTE} characters")
    if not note.isprintable():
        raise InvalidRequest("'note' must be one line of printable text")
    return note


def parse_duration(raw: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    m = _DURATION.match(raw.strip().lower())
    if m is None or int(m.group(1)) == 0:
        raise InvalidRequest(
            f"{raw!r} is not a duration: use a whole number and a unit, like 90m, 12h, 7d or 2w"
        )
    return float(int(m.group(1)) * _UNITS[m.group(2)])


def parse_until(raw: str) -> float:
    """An ISO 8601 time (UTC when it names no offset) -> epoch seconds."""
    try:
        when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{raw!r} is not a time: use ISO 8601, like 2027-01-31T18:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def expiry(now: float, *, duration: str | None, until: str | None) -> float | None:
    """The expiry from ``--for``/``for`` or ``--until``/``until`` (not both); None: none."""
    if duration and until:
        raise InvalidRequest("give either a duration ('for') or an end time ('until'), not both")
    if duration:
        at = now + parse_duration(duration)
    elif until:
        at = parse_until(until)
    else:
        return None
    if at <= now:
        raise InvalidRequest("the end time must be in the future")
    if at >= FOREVER:
        raise InvalidRequest("the end time must be before the year 9999; omit it for no expiry")
    return at


@dataclass(frozen=True)
class EntryRequest:
    """A run-time entry as asked for (the CLI's flags, the admin API's body), not yet
    checked: :meth:`validated` makes the entry or names what is wrong."""

    raw: str  # a number, or a prefix ending in '*'
    kind: Kind
    note: str | None = None
    duration: str | None = None  # "for": 90m, 12h, 7d
    until: str | None = None  # an ISO 8601 time

    def validated(self, now: float, *, default_region: str, created_by: str) -> ListEntry:
        """The entry; every problem an InvalidRequest fit for the caller."""
        if self.kind not in KINDS:
            raise InvalidRequest("'kind' must be block or allow")
        return ListEntry(
            pattern=parse_pattern(self.raw, default_region),
            kind=self.kind,
            note=parse_note(self.note),
            created_by=created_by[:MAX_BY],
            created_at=now,
            expires_at=expiry(now, duration=self.duration, until=self.until),
        )


# -- output -----------------------------------------------------------------------------


def config_entries(blocklist: Iterable[str], allowlist: Iterable[str]) -> list[ListEntry]:
    """The configured (normalised) lists as permanent entries."""
    out = [ListEntry(p, "block", "OTPGUARD_BLOCKLIST", source="config") for p in blocklist]
    out += [ListEntry(p, "allow", "OTPGUARD_ALLOWLIST", source="config") for p in allowlist]
    return out


def mask_pattern(pattern: str) -> str:
    """A pattern for events and logs: a short prefix (a range of at least ten million
    numbers) as it is, anything longer masked like a number."""
    if len(pattern) - 1 <= 7:
        return pattern
    return mask_number(pattern)


def mask_note(note: str) -> str:
    """A note for events and logs: runs of six or more digits masked (a number typed
    into a note stays out of the logs)."""
    return _DIGIT_RUN.sub(lambda m: m.group(0)[:2] + "*" * (len(m.group(0)) - 2), note)


def entry_out(entry: ListEntry, iso: Callable[[float], str]) -> dict[str, Any]:
    """An entry for the admin API and ``numbers list --json`` (``iso`` formats times)."""
    return {
        "number": entry.pattern,
        "kind": entry.kind,
        "source": entry.source,
        "note": entry.note,
        "created_by": entry.created_by or None,
        "created_at": iso(entry.created_at) if entry.source == "runtime" else None,
        "expires_at": iso(entry.expires_at) if entry.expires_at is not None else None,
    }
