"""Admission: shared capacity paid for in conversions.

SMS pumping makes a business text numbers nobody will type a code from. A
real customer types the code within seconds; a pumped number never does. So
every shared-capacity scope (all traffic, a country, number blocks at several
sizes, an API key) keeps a **bucket** of *unconverted* sends:

* a send raises the bucket's ``level`` by one (it reserves room);
* an approval lowers it by the sends of that verification (the refund), and
  raises ``earned`` by one;
* the scope's allowance is ``base + share x earned``;
* level and earned both decay exponentially with the bucket's time constant
  ``tau``, so old history neither blocks nor lends room for ever.

A send fits when ``level + 1 <= allowance`` in every bucket of every scope. A
busy site whose users type their codes earns far more room than it uses; an
attacker who never types a code only gets the base, and then only what decays
per ``tau``: a scope with a base of 80 and a tau of 10 h admits 80 sends at
once and then about one every 7.5 minutes (``80 / 600``) for as long as nobody
converts. A short bucket beside the long one (``80/10m;80/10h``) bounds the
slack a pump can borrow from a busy site's approvals.

**Pressure**: with a challenge provider configured, a send that would fill a
bucket beyond ``1 - admission_pressure`` of its allowance needs a passed
challenge instead (HTTP 428); a passed challenge admits the start despite the
buckets (it is still counted in them). Returning numbers (approved within
``trusted_days``) skip the buckets altogether. Per-number, per-IP, per-network
and per-account limits hold for everybody.

The decision is taken by the store inside the one atomic operation that
records the send (``Store.admit``); this module holds the arithmetic, which the
SQL stores run in their transaction and the Redis store mirrors in Lua.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .models import Bucket, RateDecision

#: A bucket row whose last write is older than this many time constants holds
#: nothing worth keeping (e^-20 ~ 2e-9): the purge deletes it.
FORGET_AFTER_TAUS = 20.0


@dataclass(frozen=True)
class Level:
    """A bucket's state, decayed to some moment."""

    level: float = 0.0
    earned: float = 0.0


def decayed(level: float, earned: float, last: float, now: float, tau: float) -> Level:
    """The state written at ``last`` as it stands at ``now``."""
    if now <= last or tau <= 0:
        return Level(level, earned)
    factor = math.exp(-(now - last) / tau)
    return Level(level * factor, earned * factor)


def allowance(bucket: Bucket, state: Level) -> float:
    return bucket.base + bucket.share * state.earned


def fits(bucket: Bucket, state: Level, cost: int = 1, *, pressure: float = 0.0) -> bool:
    """Whether ``cost`` more unconverted sends fit; with ``pressure`` p, whether they
    fit under ``(1 - p)`` of the allowance (the soft line a challenge guards)."""
    return state.level + cost <= (1.0 - pressure) * allowance(bucket, state) + 1e-9


def retry_after(bucket: Bucket, state: Level, cost: int = 1) -> float:
    """Seconds until the level has decayed enough for ``cost`` more sends (the
    earned room decays too, so this is a lower bound, never zero)."""
    room = allowance(bucket, state) - cost
    if state.level <= 0:
        return 1.0
    if room <= 0:
        # The base alone must make room: wait until earned is gone and the level is
        # below base - cost (or a whole time constant when the base cannot fit it).
        room = bucket.base - cost
        if room <= 0:
            return bucket.tau
    if state.level <= room:
        return 1.0
    return max(1.0, bucket.tau * math.log(state.level / room))


def judge(
    buckets: Sequence[Bucket], states: Sequence[Level], pressure: float | None
) -> RateDecision | None:
    """The first bucket a send does not fit (hard), or fits only above the soft line
    (``challenge``); None when it fits everywhere. The SQL stores call this inside
    their transaction; the Redis store's Lua and PostgreSQL's ``otpguard_admit``
    mirror it."""
    for b, state in zip(buckets, states, strict=True):
        hard = not fits(b, state)
        if hard or (pressure is not None and not fits(b, state, pressure=pressure)):
            wait = retry_after(b, state)
            return RateDecision(
                False, b.name, wait, int(state.level), challenge=not hard, key=b.key
            )
    return None


def after_send(state: Level, cost: int) -> Level:
    return Level(state.level + cost, state.earned)


def after_approval(state: Level, refund: int) -> Level:
    return Level(max(0.0, state.level - refund), state.earned + 1.0)
