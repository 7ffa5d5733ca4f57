"""Verifications in the Redis store: one hash each, and a per-number index.

::

    og:{v:<id>}              hash   one verification (TTL: lifetime + VERIFICATION_KEEP)
    og:{n:<e164>}:pending    zset   ids of that number's verifications by created_at

Each change is one script on the verification's hash (``redis_lua.py``). The index
is in another slot in Cluster: it is written first, so a verification is never
invisible to ``find_pending``, which skips (and in time drops) ids without one.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import StorageError
from ..models import AttemptOutcome, AttemptTicket, Channel, Status, Verification
from ..purpose import LOGIN
from .redis_base import BATCH, RedisBase
from .redis_lua import ms, ts

VERIFICATION_KEEP = 86_400  # seconds a verification's key outlives its (logical) expiry
INDEX_KEEP = 2 * 86_400  # the per-number index outlives each verification it lists by this
DANGLING_AFTER = 300.0  # index ids this much older than ``now`` without a verification are gone

V_FLOATS = ("created_at", "updated_at", "expires_at", "resend_available_at")
V_INTS = ("attempts", "sends", "code_length")
V_OPTIONAL = ("client_ip", "country", "locale", "service_name", "owner", "service")
# What a code is for (purpose.py); a hash from before purposes has none: a login code.
V_BINDING = ("amount", "currency", "payee")


def hash_fields(v: Verification) -> list[str]:
    """``v`` as the field, value, ... list of its hash."""
    fields: dict[str, str] = {
        "id": v.id,
        "to": v.to,
        "channel": Channel(v.channel).value,
        "status": Status(v.status).value,
        "key_id": v.key_id,
        "code_hash": v.code_hash,
        **{name: ts(getattr(v, name)) for name in V_FLOATS},
        **{name: str(int(getattr(v, name))) for name in V_INTS},
    }
    fields["purpose"] = v.purpose
    for name in (*V_OPTIONAL, *V_BINDING):
        value = getattr(v, name)
        if value is not None:
            fields[name] = value
    return [item for pair in fields.items() for item in pair]


def from_hash(raw: dict[str, str] | Sequence[str]) -> Verification:
    """A verification from HGETALL (a dict, or a script's flat field, value list)."""
    h = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=True))
    return Verification(
        id=h["id"], to=h["to"], channel=Channel(h["channel"]), status=Status(h["status"]),
        key_id=h["key_id"], code_hash=h["code_hash"], created_at=float(h["created_at"]),
        updated_at=float(h["updated_at"]), expires_at=float(h["expires_at"]),
        resend_available_at=float(h["resend_available_at"]), attempts=int(h["attempts"]),
        sends=int(h["sends"]), client_ip=h.get("client_ip"), country=h.get("country"),
        locale=h.get("locale"), code_length=int(h["code_length"]),
        service_name=h.get("service_name"), owner=h.get("owner"),
        purpose=h.get("purpose") or LOGIN, amount=h.get("amount"),
        currency=h.get("currency"), payee=h.get("payee"), service=h.get("service"),
    )  # fmt: skip


class RedisVerifications(RedisBase):
    def _create_call(self, v: Verification) -> tuple[list[str], list[object]]:
        """The keys (hash, index) and ARGV of the ``create`` script for ``v``."""
        lifetime = max(0.0, v.expires_at - v.created_at)
        index_ttl = ms(lifetime + VERIFICATION_KEEP + INDEX_KEEP)
        args = [ms(lifetime + VERIFICATION_KEEP), index_ttl, v.id, ts(v.created_at)]
        return [self._vkey(v.id), self._nkey(v.to)], [*args, *hash_fields(v)]

    async def create_verification(self, v: Verification) -> None:
        keys, args = self._create_call(v)
        if self._opts.cluster:
            # Two slots: the index first, so a verification is never invisible to
            # find_pending; an index entry without a verification is skipped there.
            await self._run("index_add", [keys[1]], [args[3], v.id, args[1]])
            keys = keys[:1]
        if not await self._run("create", keys, args):
            raise StorageError("redis store: create_verification failed (id exists)")

    async def get_verification(self, verification_id: str) -> Verification | None:
        raw = await self._live.hgetall(self._vkey(verification_id))
        return from_hash(raw) if raw else None

    async def find_pending(self, to: str, now: float) -> Verification | None:
        found = await self._pending(to, now, None, 1)
        return found[0] if found else None

    async def list_pending(
        self, to: str, now: float, *, owner: str | None, limit: int, any_status: bool = False
    ) -> list[Verification]:
        return await self._pending(to, now, owner, limit, any_status)

    async def _pending(
        self, to: str, now: float, owner: str | None, limit: int, any_status: bool = False
    ) -> list[Verification]:
        nkey = self._nkey(to)
        found: list[Verification] = []
        if limit <= 0:
            return found
        client = self._live
        # Newest first; equal created_at in descending id order, like the SQL stores.
        entries: list[tuple[str, float]] = await client.zrevrange(nkey, 0, -1, withscores=True)
        dangling: list[str] = []
        for i in range(0, len(entries), BATCH):
            chunk = entries[i : i + BATCH]
            pipe = client.pipeline(transaction=False)
            for vid, _ in chunk:
                pipe.hgetall(self._vkey(vid))
            for (vid, created_at), raw in zip(chunk, await pipe.execute(), strict=True):
                if not raw:
                    # Gone (TTL or purge). A young one may be a create in flight.
                    if created_at < now - DANGLING_AFTER:
                        dangling.append(vid)
                    continue
                v = from_hash(raw)
                if (
                    (any_status or v.status is Status.PENDING)
                    and v.expires_at > now
                    and (owner is None or v.owner in (owner, None))
                ):
                    found.append(v)
                    if len(found) >= limit:
                        break
            if len(found) >= limit:
                break
        if dangling:
            await client.zrem(nkey, *dangling)
        return found

    async def record_attempt(
        self, verification_id: str, max_attempts: int, now: float
    ) -> AttemptTicket | None:
        key = [self._vkey(verification_id)]
        out = await self._run("record_attempt", key, [max_attempts, ts(now)])
        if out is None:
            return None
        return AttemptTicket(AttemptOutcome(out[0]), from_hash(out[1]))

    async def approve(self, verification_id: str, now: float, *, code_hash: str) -> bool:
        return bool(await self._run("approve", [self._vkey(verification_id)], [ts(now), code_hash]))

    async def lock_if_exhausted(self, verification_id: str, max_attempts: int, now: float) -> bool:
        key = [self._vkey(verification_id)]
        return bool(await self._run("lock", key, [max_attempts, ts(now)]))

    async def replace_code(
        self, verification_id: str, key_id: str, code_hash: str, now: float,
        expires_at: float, resend_available_at: float, *, replaces: str,
    ) -> Verification | None:  # fmt: skip
        ttl = ms(max(0.0, expires_at - now) + VERIFICATION_KEEP)
        args = [ts(now), key_id, code_hash, ts(expires_at), ts(resend_available_at), ttl, replaces]
        out = await self._run("replace", [self._vkey(verification_id)], args)
        return from_hash(out) if out else None

    async def transition(
        self, verification_id: str, from_statuses: Sequence[Status], to: Status, now: float
    ) -> Verification | None:
        args = [Status(to).value, ts(now), *(Status(s).value for s in from_statuses)]
        out = await self._run("transition", [self._vkey(verification_id)], args)
        return from_hash(out) if out else None
