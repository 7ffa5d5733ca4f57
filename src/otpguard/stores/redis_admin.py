"""Flags, events, refusal tallies, event counts, alerts and API keys in the Redis store.

::

    og:{f:<key>}             hash   one flag: value, until
    og:{ev}:id / :ts / :data        events by id (lex), by ts, and their JSON
    og:{ev}:tally:n / :last / :ex   refusal tallies by "minute|kind": count, newest ts,
                                    first refusal's JSON; og:{ev}:tally:idx by minute
    og:{ev}:cnt:<family>[:idx]      event counts by "minute|kind" (redis_counts.py)
    og:{alerts}              hash   id -> alert JSON
    og:{apikeys}             hash   id -> API key JSON; og:{apikeys}:revoked id -> ts

Events, tallies and counts share the ``{ev}`` tag, so storing events raises their
counts in the same script. The ``numlist:`` flags are block and allow entries,
read here and written by ``redis_lists.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict

from .. import counters
from ..errors import StorageError
from ..events import Event
from ..numberlists import KEY_PREFIX as LIST_KEY_PREFIX
from . import redis_counts
from .base import Alert, ApiKey, EventCount, EventQuery, RefusalTally
from .redis_base import BATCH, to_json
from .redis_lists import RedisLists
from .redis_lua import ms, ts

FLAG_KEEP = 86_400  # seconds a flag's key outlives its ``until`` (wall clock: no ``now``)


def _event_matches(e: Event, q: EventQuery) -> bool:
    hashes = q.number_hashes  # any of them: a number's hash under every key
    return (
        (not q.types or e.type in q.types)
        and (hashes is None or e.number_hash in hashes)
        and (q.client_ip is None or e.client_ip == q.client_ip)
        and (q.country is None or e.country == q.country)
        and (q.since is None or e.ts >= q.since)
        and (q.until is None or e.ts < q.until)
    )


def _api_key(raw: str, revoked_at: str | None) -> ApiKey:
    d = json.loads(raw)
    return ApiKey(
        id=d["id"],
        name=d["name"],
        key_hash=d["key_hash"],
        scopes=tuple(d["scopes"]),
        created_at=d["created_at"],
        revoked_at=None if revoked_at is None else float(revoked_at),
    )


class RedisAdmin(RedisLists):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        p = self._opts.prefix
        self._ev = (f"{p}:{{ev}}:id", f"{p}:{{ev}}:ts", f"{p}:{{ev}}:data")
        self._tally = tuple(f"{p}:{{ev}}:tally:{k}" for k in ("n", "last", "ex", "idx"))
        self._counts = redis_counts.count_keys(p)
        self._alerts = f"{p}:{{alerts}}"
        self._keys = (f"{p}:{{apikeys}}", f"{p}:{{apikeys}}:revoked")

    # -- flags ------------------------------------------------------------------------

    async def set_flag(self, key: str, value: str, until: float) -> None:
        if key.startswith(LIST_KEY_PREFIX):
            raise ValueError("numlist: flags are written by put_list_entry (redis_lists.py)")
        # No ``now`` here: the TTL runs from the wall clock, a day past ``until``;
        # get_flag decides from the caller's ``now`` alone.
        ttl = ms(max(0.0, until - time.time()) + FLAG_KEEP)
        await self._run("set_flag", [self._fkey(key)], [value, ts(until), ttl])

    async def get_flag(self, key: str, now: float) -> str | None:
        if key.startswith(LIST_KEY_PREFIX):
            return (await self.get_flags([key], now)).get(key)
        value, until = await self._live.hmget(self._fkey(key), "value", "until")
        if value is None or until is None or float(until) <= now:
            return None
        return str(value)

    async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]:
        """Several flags in one pipelined round trip; the ``numlist:`` ones (block and
        allow entries) as one HMGET of their hash (redis_lists.py)."""
        if not keys:
            return {}
        listed = [k for k in keys if k.startswith(LIST_KEY_PREFIX)]
        plain = [k for k in keys if not k.startswith(LIST_KEY_PREFIX)]
        pipe = self._live.pipeline(transaction=False)
        for key in plain:
            pipe.hmget(self._fkey(key), "value", "until")
        if listed:
            self._queue_list_read(pipe, listed)
        rows = await pipe.execute()
        out = {
            key: str(value)
            for key, (value, until) in zip(plain, rows, strict=False)
            if value is not None and until is not None and float(until) > now
        }
        if listed:
            out.update(self._list_flags(listed, rows[-1], now))
        return out

    # -- events -----------------------------------------------------------------------

    def _events_call(self, events: Sequence[Event]) -> tuple[list[str], list[object]]:
        """The keys and ARGV of the ``add_events`` script for ``events`` (a start's
        admission and ``settle`` run it inside their own scripts too)."""
        ttl = ms(self._opts.event_ttl_days * 86_400.0)
        args: list[object] = [self._opts.max_events, ttl, len(events)]
        for e in events:
            args += [e.id, ts(e.ts), e.to_json()]
        args += redis_counts.quads(counters.of_events(events))
        return [*self._ev, *self._counts], args

    async def add_events(self, events: Sequence[Event]) -> None:
        if events:
            await self._run("add_events", *self._events_call(events))

    async def list_events(self, query: EventQuery) -> list[Event]:
        """Newest id first. Filters run here, in Python, over a scan of ids from the
        cursor down: at most ``max_events`` ids (the cap) are read for one call."""
        limit = max(0, query.limit)
        out: list[Event] = []
        upper = "+" if query.before_id is None else f"({query.before_id}"
        client = self._live
        while len(out) < limit:
            ids: list[str] = await client.zrevrangebylex(self._ev[0], upper, "-", 0, BATCH)
            if not ids:
                break
            for raw in await client.hmget(self._ev[2], ids):
                if raw is None:  # dropped between the two reads
                    continue
                e = Event.from_dict(json.loads(raw))
                if _event_matches(e, query):
                    out.append(e)
                    if len(out) == limit:
                        break
            upper = f"({ids[-1]}"
        return out

    async def tally_refusal(self, minute: int, key: str, example: Event) -> int:
        args = [f"{minute}|{key}", minute, ts(example.ts), example.to_json(),
                self._opts.max_events, ms(self._opts.event_ttl_days * 86_400.0),
                *redis_counts.quads(counters.increments([(minute, example)]))]  # fmt: skip
        return int(await self._run("tally", [*self._tally, *self._counts], args))

    async def list_refusal_tallies(self, since: float, until: float) -> list[RefusalTally]:
        out: list[RefusalTally] = []
        client = self._live
        fields: list[str] = await client.zrangebyscore(
            self._tally[3], f"({since - 60}", f"({until}"
        )
        for i in range(0, len(fields), BATCH):
            batch = fields[i : i + BATCH]
            counts = await client.hmget(self._tally[0], batch)
            lasts = await client.hmget(self._tally[1], batch)
            examples = await client.hmget(self._tally[2], batch)
            for name, n, last, ex in zip(batch, counts, lasts, examples, strict=True):
                if n is None or last is None or ex is None:  # purged between the reads
                    continue
                minute, _, key = name.partition("|")
                out.append(RefusalTally(int(minute), key, int(n), float(last),
                                        Event.from_dict(json.loads(ex))))  # fmt: skip
        return out

    async def list_event_counts(
        self, since: float, until: float, families: Sequence[str]
    ) -> list[EventCount]:
        out: list[EventCount] = []
        for family in families:
            out += await redis_counts.read_counts(self._live, self._counts, since, until, family)
        return out

    async def _purge_events(self, now: float, event_horizon: float) -> int:
        """Events, tallies and counts older than ``event_horizon``, through their indexes."""
        total = 0
        for script, keys, bound in (
            ("purge_events", self._ev, now - event_horizon),
            ("purge_tallies", self._tally, now - event_horizon - 60),
            *(("purge_counts", redis_counts.family_keys(self._counts, f),
               now - event_horizon - 60) for f in counters.FAMILIES),
        ):  # fmt: skip
            while True:
                n = int(await self._run(script, keys, [ts(bound), BATCH]))
                total += n if script != "purge_counts" else 0  # sums of events, not data
                if n < BATCH:
                    break
        return total

    # -- alerts -----------------------------------------------------------------------

    async def put_alert(self, alert: Alert) -> None:
        await self._live.hset(self._alerts, alert.id, to_json(asdict(alert)))

    async def list_alerts(
        self, since: float | None = None, status: str | None = None
    ) -> list[Alert]:
        raw: dict[str, str] = await self._live.hgetall(self._alerts)
        alerts = [Alert(**json.loads(value)) for value in raw.values()]
        alerts = [
            a
            for a in alerts
            if (since is None or a.updated_at >= since) and (status is None or a.status == status)
        ]
        alerts.sort(key=lambda a: (a.updated_at, a.id), reverse=True)
        return alerts

    # -- API keys ---------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey) -> None:
        data = to_json({"id": key.id, "name": key.name, "key_hash": key.key_hash,
                        "scopes": list(key.scopes), "created_at": key.created_at})  # fmt: skip
        revoked = "" if key.revoked_at is None else ts(key.revoked_at)
        if not await self._run("create_key", self._keys, [key.id, data, revoked]):
            raise StorageError("redis store: create_api_key failed (id exists)")

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        pipe = self._live.pipeline(transaction=False)
        pipe.hget(self._keys[0], key_id)
        pipe.hget(self._keys[1], key_id)
        raw, revoked = await pipe.execute()
        return None if raw is None else _api_key(raw, revoked)

    async def list_api_keys(self) -> list[ApiKey]:
        pipe = self._live.pipeline(transaction=False)
        pipe.hgetall(self._keys[0])
        pipe.hgetall(self._keys[1])
        raw, revoked = await pipe.execute()
        keys = [_api_key(value, revoked.get(key_id)) for key_id, value in raw.items()]
        keys.sort(key=lambda k: (k.created_at, k.id))
        return keys

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        return bool(await self._run("revoke_key", self._keys, [key_id, ts(now)]))
