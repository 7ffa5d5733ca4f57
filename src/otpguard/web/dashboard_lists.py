"""The dashboard's "Block and allow lists" panel: how many entries of each kind and
source, and the newest run-time entries, numbers masked (``numberlists.mask_pattern``:
the dashboard takes a ``monitor`` key; the clear numbers are for admin keys, through
``/v1/admin/numbers``). Every value is escaped here."""

from __future__ import annotations

from ..numberlists import ListEntry, mask_pattern
from ..web.api import iso
from .dashboard_render import e, table

NEWEST = 10  # run-time entries shown


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    stamp = iso(ts)
    return f'<time datetime="{e(stamp)}">{e(stamp[:10])} {e(stamp[11:16])}</time>'


def lists_panel(counts: dict[str, dict[str, int]], entries: list[ListEntry]) -> str:
    """``counts`` as ``ListEditor.counts`` gives them; ``entries`` the run-time ones,
    newest first."""
    figures = "".join(
        f'<div class="tile" data-tile="{e(kind)}"><span class="v">'
        f"{e(counts['runtime'][kind] + counts['config'][kind])}</span>"
        f'<span class="k">{e(kind)} ({e(counts["runtime"][kind])} run-time, '
        f"{e(counts['config'][kind])} configured)</span></div>"
        for kind in ("block", "allow")
    )
    rows = [
        [
            _when(x.created_at),
            e(x.kind),
            e(mask_pattern(x.pattern)),
            _when(x.expires_at),
            e(x.created_by),
            e(x.note),
        ]
        for x in entries[:NEWEST]
    ]
    newest = (
        table(["added", "kind", "number", "expires", "by", "note"], rows, wrap={4, 5})
        if rows
        else '<p class="empty">No run-time entries. Add one with '
        "<code>otpguard numbers block NUMBER</code>.</p>"
    )
    return f'<div class="tiles lists">{figures}</div>{newest}'
