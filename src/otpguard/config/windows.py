"""The ``LIMIT/WINDOW`` grammar of the rate limits, budgets and admission buckets."""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW_RE = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]*)\s*([smhd])\s*$", re.ASCII)


class Window(NamedTuple):
    """One rule of a setting: at most ``limit`` within ``seconds`` (for an admission
    bucket: a base of ``limit`` sends decaying with time constant ``seconds``)."""

    limit: int
    seconds: int


#: A setting's rules, in the order written (``()`` when the setting is ``off``).
Windows = tuple[Window, ...]


def parse_windows(spec: str) -> list[tuple[int, int]]:
    """``"3/10m;10/24h"`` -> ``[(3, 600), (10, 86400)]``; ``""`` or ``"off"`` -> ``[]``."""
    return list(windows_of(spec))


@functools.lru_cache(maxsize=64)
def windows_of(spec: str) -> Windows:
    """``spec`` parsed into typed :class:`Window` values (cached: specs repeat)."""
    spec = spec.strip()
    if spec.lower() in ("", "off", "none"):
        return ()
    out = []
    for part in spec.split(";"):
        m = _WINDOW_RE.match(part)
        if not m:
            raise ValueError(
                f"{part.strip()!r} is not a limit; write LIMIT/WINDOW like 3/10m or 10/24h "
                "(units s, m, h, d), several separated by ';'"
            )
        limit, n, unit = int(m.group(1)), int(m.group(2) or 1), m.group(3)
        if n <= 0:
            raise ValueError(f"{part.strip()!r}: the window must be positive")
        out.append(Window(limit, n * _UNITS[unit]))
    return tuple(out)
