"""An admitted start's verification and events in the Redis admission's script.

``admit_start`` is the ``admit`` script followed, when it admits, by the ``create``
script (the verification's hash and its per-number index) and the ``add_events``
script (the events and their per-minute counts), each run as a function over its own
slice of KEYS and ARGV: one script, so a refused start writes none of them and an
admitted one all. ARGV ends with three sizes: the admission's ARGV, the create ARGV,
the admission's KEYS.

On Cluster the keys are in several slots: the admission goes step by step
(``redis_cluster.py``), then the verification and its events are written slot by
slot, as ``create_verification`` and ``add_events`` write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..events import Event
from ..models import Verification
from ..numberlists import KEY_PREFIX as LIST_KEY_PREFIX
from .base import Started
from .redis_cluster import RedisStepwise
from .redis_counts import ADD_EVENTS_LUA
from .redis_lua import CREATE_LUA
from .redis_lua_rates import ADMIT_LUA
from .redis_lua_rates import SCRIPTS as RATE_SCRIPTS

ADMIT_START_LUA = (
    RATE_SCRIPTS["admit"].removesuffix(ADMIT_LUA)
    + f"local function admit_part()\n{ADMIT_LUA}\nend\n"
    + f"local function create_part(KEYS, ARGV)\n{CREATE_LUA}\nend\n"
    + f"local function events_part(KEYS, ARGV)\n{ADD_EVENTS_LUA}\nend\n"
    + """
local n = #ARGV
local nf, np = tonumber(ARGV[n - 4]), tonumber(ARGV[n - 3])
local na, nc, nk = tonumber(ARGV[n - 2]), tonumber(ARGV[n - 1]), tonumber(ARGV[n])
if redis.call('EXISTS', KEYS[nk + 1]) == 1 then
  return redis.error_reply('create_verification failed (id exists)')
end
-- The start's unless_flags: nf flag hashes, then (np > 0) the number lists' hash with
-- np patterns at the end of ARGV. Any entry there, live or not yet purged: 'flags'.
local now = tonumber(ARGV[1])
for i = #KEYS - nf + 1, #KEYS - (np > 0 and 1 or 0) do
  local u = redis.call('HGET', KEYS[i], 'until')
  if u and tonumber(u) > now then return {'flags'} end
end
if np > 0 then
  local got = redis.call('HMGET', KEYS[#KEYS], unpack(ARGV, n - 4 - np, n - 5))
  for i = 1, np do if got[i] then return {'flags'} end end
end
local out = admit_part()
if out[1] ~= 0 then return out end
local function slice(t, a, b)
  local r = {}
  for i = a, b do r[#r + 1] = t[i] end
  return r
end
create_part(slice(KEYS, nk + 1, nk + 2), slice(ARGV, na + 1, na + nc))
local ne = n - 5 - np - (na + nc)
if ne > 0 then
  events_part(slice(KEYS, nk + 3, #KEYS - nf), slice(ARGV, na + nc + 1, na + nc + ne))
end
return out
"""
)
SCRIPTS = {"admit_start": ADMIT_START_LUA}


class RedisStarts(RedisStepwise):
    if TYPE_CHECKING:  # from RedisVerifications and RedisAdmin, beside it in RedisStore

        def _create_call(self, v: Verification) -> tuple[list[str], list[object]]: ...
        def _list_keys(self) -> list[str]: ...
        async def get_flags(self, keys: Sequence[str], now: float) -> dict[str, str]: ...
        def _events_call(self, events: Sequence[Event]) -> tuple[list[str], list[object]]: ...
        async def create_verification(self, v: Verification) -> None: ...
        async def add_events(self, events: Sequence[Event]) -> None: ...
        def _plan_fields(self, start: Started) -> list[object]: ...

    async def _admit_script(
        self, keys: list[str], args: list[Any], start: Started | None
    ) -> list[Any]:
        """The ``admit`` script's answer, with ``start`` written by the same script."""
        if start is None or self._opts.cluster:
            out: list[Any] = await self._run("admit", keys, args)
            if start is not None and out[0] == 0:
                await self._write_start(start)
            return out
        vkeys, vargs = self._create_call(start.verification)
        vargs += self._plan_fields(start)
        ekeys: list[str] = []
        eargs: list[object] = []
        if start.events:
            ekeys, eargs = self._events_call(start.events)
        fkeys, patterns = self._unless_call(start.unless_flags)
        sizes = [len(fkeys), len(patterns), len(args), len(vargs), len(keys)]
        out = await self._run(
            "admit_start",
            [*keys, *vkeys, *ekeys, *fkeys],
            [*args, *vargs, *eargs, *patterns, *sizes],
        )
        return out

    def _unless_call(self, flags: Sequence[str]) -> tuple[list[str], list[str]]:
        """The flag hashes of ``flags``, then the number lists' hash when some are
        ``numlist:`` entries, and those entries' patterns."""
        listed = [k[len(LIST_KEY_PREFIX) :] for k in flags if k.startswith(LIST_KEY_PREFIX)]
        keys = [self._fkey(k) for k in flags if not k.startswith(LIST_KEY_PREFIX)]
        if listed:
            keys.append(self._list_keys()[0])
        return keys, listed

    async def _write_start(self, start: Started) -> None:
        """Cluster, after a cross-slot admission: slot by slot, as on their own."""
        await self.create_verification(start.verification)
        await self.add_events(start.events)
