"""Repeated refusals are counted, not stored one by one.

A script replaying one request is refused thousands of times a minute; a row and a
log line for each would let it grow the database and the log without limit. So
each refusal is counted in a *tally* (``Store.tally_refusal``): one row per minute
and *kind*, where the kind is the reason, the rule, the subject the rule limits,
the client's IP (IPv4 address, IPv6 /64) and the channel:

=============================================== ===========================================
refusal                                         subject
=============================================== ===========================================
admission (``details.scope``)                   ``scope country GB``, ``scope block +4474..``
fraud rules (``details.subject``)               ``prefix +447400``, ``country GB``, ``global``
per-number rules (phone, cooldown, failed_checks ``number <keyed hash>``
, undeliverable)
per-IP rules (ip, network, ipv6_48)             ``ip`` (the IP is in the kind already)
anything else (destination policy, hard caps,   ``country <ISO code>`` (``unknown`` when the
invalid numbers, ...)                           number did not parse)
=============================================== ===========================================

The first refusal of a kind in a minute is stored as a full event (the events list
shows an example with its details) and logged; the later ones only raise the
tally, and the log gets one summary line when the count reaches 10, 100, 1000, ...
The metrics listeners still see every refusal.

From the second refusal of a kind in a minute on, the tally also raises the event
counts (``counters.py``) of the kind's example, which is what stats, the dashboard
and the alerts read. Readers of events get the repeats back as :func:`repeats`: one
event per tally with ``count`` = the tally's count less the stored first one, at
the time of the minute's newest refusal. It carries the fields every refusal of
its kind shares: reason, rule, IP, the subject's scope or number, the country when
the subject fixes it. So counts by reason, rule, scope, IP and (for per-number
rules) number are exact per minute; a repeat of a refusal whose subject is not the
number (a premium destination, say) counts toward no number.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from .events import Event, EventType
from .limits import ip_key
from .stores.base import RefusalTally, Store

log = logging.getLogger("otpguard.events")

MINUTE = 60
NUMBER_RULES = frozenset({"phone", "cooldown", "max_sends", "failed_checks"})
NUMBER_REASONS = frozenset({"undeliverable"})
IP_RULES = frozenset({"ip", "network", "ipv6_48"})
KEPT_DETAILS = ("scope", "subject", "unconverted")  # what the alert rules read


def minute_of(ts: float) -> int:
    return int(ts // MINUTE) * MINUTE


def subject_of(e: Event) -> str:
    for name, prefix in (("scope", "scope "), ("subject", "")):
        value = e.details.get(name)
        if isinstance(value, str):
            return prefix + value
    if (e.rule in NUMBER_RULES or e.reason in NUMBER_REASONS) and e.number_hash:
        return f"number {e.number_hash}"
    if e.rule in IP_RULES:
        return "ip"
    return f"country {e.country or 'unknown'}"


def _ip(e: Event) -> str:
    try:
        return ip_key(e.client_ip) if e.client_ip else "unknown"
    except ValueError:  # not an address (events are not validated on the way in)
        return e.client_ip or "unknown"


def kind_of(e: Event) -> str:
    """What the tally counts a refusal under (with its minute)."""
    return f"{e.reason or ''}|{e.rule or ''}|{subject_of(e)}|{_ip(e)}|{e.channel or ''}"


def example_of(e: Event) -> Event:
    """The fields the repeats of ``e``'s kind share, kept with its tally."""
    subject = subject_of(e)
    by_number = subject.startswith("number ")
    return Event(
        type=e.type,
        ts=e.ts,
        number_masked=e.number_masked if by_number else None,
        number_hash=e.number_hash if by_number else None,
        country=e.country if by_number or subject.startswith("country ") else None,
        channel=e.channel,
        client_ip=e.client_ip,
        reason=e.reason,
        rule=e.rule,
        details={k: e.details[k] for k in KEPT_DETAILS if k in e.details},
    )


def log_summary(e: Event, count: int) -> None:
    """One line at 10, 100, 1000, ... refusals of a kind in a minute."""
    if count < 10 or str(count).rstrip("0") != "1":
        return
    line: dict[str, Any] = {
        "type": EventType.REFUSED.value + ".repeated",
        "ts": e.ts,
        "minute": minute_of(e.ts),
        "kind": kind_of(e),
        "count": count,
    }
    log.info(json.dumps(line, separators=(",", ":"), sort_keys=True))


def _as_event(t: RefusalTally) -> Event:
    """The tally's example (what its refusals share) standing for its repeats."""
    ex = t.example
    return replace(ex, ts=t.last_ts, details=dict(ex.details), count=t.count - 1)


async def repeats(store: Store, since: float, until: float) -> list[Event]:
    """The refusals with ``since <= ts < until`` that were counted and not stored, one
    event per tally (``count`` of them, at the newest one's time), newest first."""
    tallies = await store.list_refusal_tallies(since, until)
    out = [_as_event(t) for t in tallies if t.count > 1 and since <= t.last_ts < until]
    out.sort(key=lambda e: e.ts, reverse=True)
    return out
