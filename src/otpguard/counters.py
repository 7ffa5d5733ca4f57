"""Pre-aggregated event counts: what the stats, the dashboard and the alerts read.

Every event a store writes (``Store.add_events``) also raises, in the same atomic
operation, one counter per minute and *kind* for each kind it belongs to
(:func:`kinds_of`); so does every repeat of a refusal that is tallied rather than
stored (``Store.tally_refusal``), counted as its tally's example (``refusals.py``).
The readers sum the counters of the minutes in their window, so what they cost
depends on the window and on how many kinds there are, not on how many events
there were. The stored table (or Redis hashes) is called ``event_counts``.

A kind is ``family|fields``; the free-form field comes last so it may hold anything:

====== =============================== ====================================================
family fields                          counts
====== =============================== ====================================================
``t``  type, country                   every event (the country of an email is ``email``)
``ch`` channel                         messages sent (first sends and resends)
``r``  request (1/0), refusal label    refusals (label: ``stats.refusal_label``; request:
                                       not a refused check)
``q``  number hash (16), masked number requests (``stats.is_request``) naming a number
``ip`` client IP                       requests from a known IP
``df`` type, provider code, reason     failed deliveries and provider errors
``sc`` challenged (1/0), scope         admission refusals and challenges, per scope
``un`` scope, figure                   admission refusals' ``unconverted`` figure
``px`` prefix                          the prefixes the conversion fraud rule names
====== =============================== ====================================================

``q`` and ``ip`` have a kind per number or IP: readers ask the store for their
busiest kinds only (``Store.top_event_counts``). A window ``[since, until)`` is read
in whole minutes: the minutes that start in it. Its oldest events, those of the minute
it starts within, are left out (at most a minute's worth), so a window never reaches
back further than it says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from .events import Event, EventType

MINUTE = 60
FAMILIES = ("t", "r", "q", "ip", "df", "sc", "un", "px", "ch")
#: How many fields follow each family's name (the last may hold anything, ``|`` too).
FIELDS = {"t": 2, "r": 2, "q": 2, "ip": 1, "df": 3, "sc": 2, "un": 2, "px": 1, "ch": 1}
#: The families with a kind per number or per IP (read through their top kinds).
BUSY = frozenset({"q", "ip"})
STARTED = EventType.STARTED.value
RESENT = EventType.RESENT.value
SENT = EventType.SENT.value
EMAIL_ROW = "email"  # the "country" of the email channel's events (stats' own row)
REFUSED = EventType.REFUSED.value
DELIVERY_FAILED = EventType.DELIVERY_FAILED.value
DELIVERY_STATUS = EventType.DELIVERY_STATUS.value
#: Delivery reports from the provider that mean the message did not arrive.
FAILED_REPORTS = frozenset({"failed", "undelivered"})


def minute_of(ts: float) -> int:
    return int(ts // MINUTE) * MINUTE


def is_request(e: Event) -> bool:
    if e.type in (STARTED, RESENT):
        return True
    return e.type == REFUSED and e.rule != "failed_checks"


def is_delivery_failure(e: Event) -> bool:
    if e.type == DELIVERY_FAILED:
        return True
    return e.type == DELIVERY_STATUS and (e.reason or "") in FAILED_REPORTS


def refusal_label(e: Event) -> str:
    """``rate_limited:phone``, ``premium_rate``, ``fraud:low_conversion``, ..."""
    reason = e.reason or "unknown"
    return f"{reason}:{e.rule}" if reason == "rate_limited" and e.rule else reason


def _flag(value: bool) -> str:
    return "1" if value else "0"


def kinds_of(e: Event) -> list[str]:
    """Every kind ``e`` is counted under (each once)."""
    country = EMAIL_ROW if e.channel == EMAIL_ROW else (e.country or "")
    out = [f"t|{e.type}|{country}"]
    if e.type in (SENT, RESENT):
        out.append(f"ch|{e.channel or ''}")
    request = is_request(e)
    if e.type == REFUSED:
        out.append(f"r|{_flag(request)}|{refusal_label(e)}")
        scope = e.details.get("scope")
        if isinstance(scope, str):
            out.append(f"sc|{_flag(e.reason == 'challenge_required')}|{scope}")
            out.append(f"un|{int(e.details.get('unconverted', 0) or 0)}|{scope}")
    if request and e.number_hash:  # 16 hex digits tell numbers apart (alerts show 16)
        out.append(f"q|{e.number_hash[:16]}|{e.number_masked or '?'}")
    if request and e.client_ip:
        out.append(f"ip|{e.client_ip}")
    if is_delivery_failure(e):
        code = "" if e.provider_code is None else str(e.provider_code)
        out.append(f"df|{e.type}|{code}|{e.reason or ''}")
    # Events keep no prefix (with the masked number it would rebuild the number): the
    # prefixes come from the fraud rule, which names the ones it watches.
    subject = e.details.get("subject")
    flagged = e.rule == "low_conversion" or (
        e.type == REFUSED and e.reason == "fraud:low_conversion"
    )
    if flagged and isinstance(subject, str) and subject.startswith("prefix "):
        out.append(f"px|{subject.removeprefix('prefix ')}")
    return out


def increments(pairs: Iterable[tuple[float, Event]]) -> list[tuple[int, str, int]]:
    """``(minute, kind, n)`` for events counted at the given times, merged and sorted
    (every writer takes the rows' locks in one order, so two never deadlock)."""
    counter: Counter[tuple[int, str]] = Counter()
    for ts, e in pairs:
        minute = minute_of(ts)
        for kind in kinds_of(e):
            counter[(minute, kind)] += 1
    return [(m, k, n) for (m, k), n in sorted(counter.items())]


def of_events(events: Sequence[Event]) -> list[tuple[int, str, int]]:
    """What storing ``events`` adds to the counters."""
    return increments((e.ts, e) for e in events)


def family_of(kind: str) -> str:
    return kind.split("|", 1)[0]


def fields_of(kind: str) -> tuple[str, list[str]]:
    """``"df|verification.delivery_failed|30003|unreachable"`` -> ``("df", [...])``."""
    family, rest = kind.split("|", 1)
    return family, rest.split("|", FIELDS[family] - 1)
