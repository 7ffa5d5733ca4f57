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
local na, nc, nk = tonumber(ARGV[n - 2]), tonumber(ARGV[n - 1]), tonumber(ARGV[n])
if redis.call('EXISTS', KEYS[nk + 1]) == 1 then
  return redis.error_reply('create_verification failed (id exists)')
end
local out = admit_part()
if out[1] ~= 0 then return out end
local function slice(t, a, b)
  local r = {}
  for i = a, b do r[#r + 1] = t[i] end
  return r
end
create_part(slice(KEYS, nk + 1, nk + 2), slice(ARGV, na + 1, na + nc))
if n - 3 > na + nc then events_part(slice(KEYS, nk + 3, #KEYS), slice(ARGV, na + nc + 1, n - 3)) end
return out
"""
)
SCRIPTS = {"admit_start": ADMIT_START_LUA}


class RedisStarts(RedisStepwise):
    if TYPE_CHECKING:  # from RedisVerifications and RedisAdmin, beside it in RedisStore

        def _create_call(self, v: Verification) -> tuple[list[str], list[object]]: ...
        def _events_call(self, events: Sequence[Event]) -> tuple[list[str], list[object]]: ...
        async def create_verification(self, v: Verification) -> None: ...
        async def add_events(self, events: Sequence[Event]) -> None: ...

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
        ekeys: list[str] = []
        eargs: list[object] = []
        if start.events:
            ekeys, eargs = self._events_call(start.events)
        sizes = [len(args), len(vargs), len(keys)]
        out = await self._run(
            "admit_start", [*keys, *vkeys, *ekeys], [*args, *vargs, *eargs, *sizes]
        )
        return out

    async def _write_start(self, start: Started) -> None:
        """Cluster, after a cross-slot admission: slot by slot, as on their own."""
        await self.create_verification(start.verification)
        await self.add_events(start.events)
