"""Lists sent to PostgreSQL as array literals (``{"a","b"}``), rendered in one pass.

Each PostgreSQL request passes a few dozen short arrays (rule keys, window starts,
limits, bucket parameters). psycopg's own list dumper inspects every element to
choose an element type and then dumps each one through its own dumper: measured with
``cProfile`` on CPU time over sequential pairs (start, wrong check, right check), it
was about a quarter of the server process's PostgreSQL-side Python time. Every list
otpguard sends is flat, of ``str``, ``int``, ``float``, ``bool`` or ``None``, and
every statement casts each list parameter (``%s::text[]``, ``%s::float8[]``), so the
literal goes as an untyped parameter and the cast names its type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.adapt import Dumper

_QUOTE = str.maketrans({'"': '\\"', "\\": "\\\\"})
_NOT_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def array_literal(values: Sequence[object]) -> str:
    """``values`` as PostgreSQL's text form of a one-dimensional array (one loop, no
    call per element: this runs for some sixty lists a pair)."""
    out = []
    for v in values:
        if isinstance(v, str):
            out.append('"' + v.translate(_QUOTE) + '"')
        elif v is None:
            out.append("NULL")
        elif v is True or v is False:
            out.append("t" if v else "f")
        elif type(v) is int:
            out.append(str(v))
        elif type(v) is float:
            out.append(repr(v) if math.isfinite(v) else _NOT_FINITE[repr(v)])
        else:
            kind = type(v).__name__
            raise TypeError(f"an array element is str, int, float, bool or None, not {kind}")
    return "{" + ",".join(out) + "}"


class ArrayLiteralDumper(Dumper):
    """Dumps a ``list`` as an array literal of unknown type: the statement's cast
    (``::text[]``, ``::int8[]``, ...) gives it its type."""

    oid = 0  # unknown: every list parameter is cast in the statement

    def dump(self, obj: list[object]) -> bytes:
        encoding = self.connection.info.encoding if self.connection is not None else "utf-8"
        return array_literal(obj).encode(encoding)


async def configure(conn: AsyncConnection[Any]) -> None:
    """A pool's ``configure``: the connection sends lists as array literals."""
    conn.adapters.register_dumper(list, ArrayLiteralDumper)
