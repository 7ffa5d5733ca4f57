"""API keys: ``og_<id>_<secret>``, stored as a SHA-256 digest, shown once.

The secret part is 32 random bytes, so a plain (unkeyed) digest is enough and
keys keep working when the HMAC keyring rotates.

Each key carries explicit scopes, and every route asks for one (the table is in
docs/hardening.md):

* ``verify``: start, resend, check, cancel and fetch verifications, ``/v1`` and ``/v2``;
* ``monitor``: read-only: ``/metrics``, the ``/v1/admin`` reads and the dashboard;
* ``admin``: everything ``monitor`` may, plus the ``/v1/admin`` actions.

``admin`` implies ``monitor`` and nothing else: a key without ``verify`` cannot send
a code, whatever else it holds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from .errors import InvalidRequest, Unauthorized
from .stores.base import ApiKey, Store

SCOPES = ("verify", "monitor", "admin")
#: What each scope grants beyond itself.
IMPLIED = {"admin": frozenset({"monitor"})}
_KEY_RE = re.compile(r"^og_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(
    store: Store, name: str, scopes: tuple[str, ...], now: float
) -> tuple[ApiKey, str]:
    """Create and store a key; return its record and the key itself (shown once)."""
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise InvalidRequest("the key name must be 1-64 printable characters")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InvalidRequest(f"scopes must be among {', '.join(SCOPES)}")
    key_id = secrets.token_hex(6)
    key = f"og_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(id=key_id, name=name, key_hash=_digest(key), scopes=scopes, created_at=now)
    await store.create_api_key(record)
    return record, key


def has_scope(key: ApiKey, scope: str) -> bool:
    """Whether ``key`` grants ``scope``, itself or through a scope that implies it."""
    return any(s == scope or scope in IMPLIED.get(s, ()) for s in key.scopes)


class KeyCache:
    """Remembers keys that authenticated, for ``ttl`` seconds, so that a busy API does
    not ask the store for the same key on every request. A revoked key therefore keeps
    working for at most ``ttl`` seconds on an instance that saw it just before.
    Only successes are cached (by the key's digest), never the key itself."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._hits: dict[str, tuple[ApiKey, float]] = {}

    async def authenticate(self, store: Store, presented: str | None) -> ApiKey:
        if self.ttl <= 0:
            return await authenticate(store, presented)
        digest = _digest(presented or "")
        now = self.clock()
        hit = self._hits.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = await authenticate(store, presented)
        if len(self._hits) >= 1024:  # bounded: drop what has expired, else everything
            self._hits = {k: v for k, v in self._hits.items() if v[1] > now}
            if len(self._hits) >= 1024:
                self._hits.clear()
        self._hits[digest] = (record, now + self.ttl)
        return record


async def authenticate(store: Store, presented: str | None) -> ApiKey:
    """The live key matching ``presented``, or Unauthorized (no detail why)."""
    m = _KEY_RE.match(presented or "")
    record = await store.get_api_key(m.group(1)) if m else None
    expected = record.key_hash if record else _digest("og_000000000000_" + "x" * 43)
    ok = hmac.compare_digest(expected, _digest(presented or ""))
    if record is None or not ok or record.revoked_at is not None:
        raise Unauthorized("missing or invalid API key")
    return record
