"""What the dashboard draws: inline SVG charts, tables and tiles, as HTML strings.

Everything here is a pure function of figures already computed (``otpguard.stats``),
styled by classes from ``static/dashboard.css``; every value is escaped here.

Tables carry a ``data-label`` on each cell: on a phone-sized screen the stylesheet
turns each row into a small card of ``label: value`` lines instead of letting a wide
table run off the screen. The traffic chart is drawn twice, wide and narrow, and the
stylesheet shows the one that fits, so its labels keep a readable size at any width.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ..events import Event
from ..stats import Bucket, CountryFigures, Ranked, Stats
from ..stores.base import Alert
from ..stores.webhooks import WebhookDelivery
from .api import iso

SERIES = ("requests", "sends", "approved", "refused")


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def money(amount: float, currency: str) -> str:
    """``2.16 USD``: a spend figure always says what it is counted in."""
    return f"{amount:.2f} {currency}"


def reason_label(reason: str | None, rule: str | None) -> str:
    """A refusal's reason, with its rule when the rule adds something.

    ``rate_limited`` + ``block`` reads ``rate_limited: block``; a rule already named
    in the reason (``fraud:sequential_numbers`` + ``sequential_numbers``) is not
    repeated."""
    parts = [p for p in (reason or "").split(":") if p]
    if rule and rule not in parts:
        return f"{':'.join(parts) or 'refused'}: {rule}"
    return ":".join(parts)


# -- charts ---------------------------------------------------------------------------------


def _nice_max(n: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``n``."""
    for exp in range(0, 10):
        for step in (1, 2, 5):
            top: int = step * 10**exp
            if top >= n:
                return top
    return int(n)


def _time_label(start: float, window: float) -> str:
    stamp = iso(start)  # 2027-01-15T09:06:25Z
    return stamp[5:10] if window > 86400 else stamp[11:16]


def _traffic_svg(
    series: Sequence[Bucket], window: float, width: int, height: int, labels: int, cls: str
) -> str:
    left, right, top, bottom = 40, 24, 10, 30
    w, h = width - left - right, height - top - bottom
    peak = _nice_max(max([max(b.requests, b.sends, b.approved, b.refused) for b in series] + [1]))
    n = len(series)

    def x(i: int) -> float:
        return left + (w * i / (n - 1) if n > 1 else w / 2)

    def y(v: int) -> float:
        return top + h - h * v / peak

    out = [
        f'<svg class="chart traffic {cls}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Requests and conversions over time">'
    ]
    for frac in (0, 0.5, 1):
        gy = top + h - h * frac
        out.append(f'<line class="grid-line" x1="{left}" x2="{left + w}" y1="{gy}" y2="{gy}"/>')
        out.append(f'<text x="{left - 6}" y="{gy + 4}" text-anchor="end">{int(peak * frac)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}"/>')
    step = max(1, -(-n // labels))
    for i in range(0, n, step):
        label = _time_label(series[i].start, window)
        out.append(
            f'<text class="tick" x="{x(i):.1f}" y="{height - 10}" text-anchor="middle">'
            f"{e(label)}</text>"
        )
    for name in SERIES:
        values = [getattr(b, name) for b in series]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        out.append(f'<polyline class="line s-{name}" points="{points}"/>')
        for i, v in enumerate(values):
            if v:
                out.append(
                    f'<circle class="s-{name}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3">'
                    f"<title>{e(iso(series[i].start))}: {v} {name}</title></circle>"
                )
    out.append("</svg>")
    return "".join(out)


def traffic_chart(series: Sequence[Bucket], window: float) -> str:
    """Requests, sends, approvals and refusals per bucket, as lines with point tooltips:
    a wide drawing for desktop screens, a taller narrow one with fewer ticks for phones."""
    wide = _traffic_svg(series, window, 900, 260, 8, "wide")
    narrow = _traffic_svg(series, window, 360, 240, 4, "narrow")
    legend = "".join(f'<span class="l-{n_}">{n_}</span>' for n_ in SERIES)
    return f'{wide}{narrow}<div class="legend">{legend}</div>'


def _bars_svg(rows: list[tuple[str, float, str]], label: str, unit: str, narrow: bool) -> str:
    """Wide: the label left of its bar. Narrow: the label above a bar as wide as the chart."""
    width, row_h, left = (320, 38, 0) if narrow else (420, 22, 190)
    label_y, bar_y = (13, 19) if narrow else (14, 3)
    track = width - left - 50
    peak = max(v for _, v, _ in rows) or 1
    out = [
        f'<svg class="chart bars {"narrow" if narrow else "wide"}" '
        f'viewBox="0 0 {width} {row_h * len(rows) + 4}" role="img" aria-label="{e(label)}">'
    ]
    for i, (name, value, cls) in enumerate(rows):
        y = i * row_h + 2
        bw = track * value / peak
        shown = f"{value:g}{unit}"
        if narrow:
            out.append(f'<text class="label" x="0" y="{y + label_y}">{e(name)}</text>')
        else:
            out.append(
                f'<text class="label" x="{left - 6}" y="{y + label_y}" text-anchor="end">'
                f"{e(name)}</text>"
            )
        out.append(
            f'<rect class="bar track" x="{left}" y="{y + bar_y}" width="{track}" height="14"/>'
        )
        out.append(
            f'<rect class="bar {cls}" x="{left}" y="{y + bar_y}" width="{bw:.1f}" height="14">'
            f"<title>{e(name)}: {e(shown)}</title></rect>"
        )
        out.append(f'<text x="{left + bw + 4:.1f}" y="{y + bar_y + 11}">{e(shown)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(rows: list[tuple[str, float, str]], *, label: str, unit: str = "") -> str:
    """Horizontal bars: (label, value, css class); values scaled to the largest."""
    if not rows:
        return '<p class="empty">Nothing in this window.</p>'
    return _bars_svg(rows, label, unit, narrow=False) + _bars_svg(rows, label, unit, narrow=True)


# -- tables -------------------------------------------------------------------------------------


def table(
    headers: list[str],
    rows: list[list[str]],
    numeric: set[int] | None = None,
    wrap: set[int] | None = None,
    cards: bool = True,
) -> str:
    """Cells are HTML already escaped by the caller; ``wrap`` columns may break lines;
    ``cards``: on a phone, each row becomes a card (for tables too wide to fit)."""
    if not rows:
        return '<p class="empty">Nothing in this window.</p>'
    numeric, wrap = numeric or set(), wrap or set()

    def cell(i: int, content: str) -> str:
        classes = " ".join(c for c, on in (("n", i in numeric), ("wrap", i in wrap)) if on)
        cls = f' class="{classes}"' if classes else ""
        return f'<td data-label="{e(headers[i])}"{cls}>{content}</td>'

    head = "".join(
        f'<th class="n">{e(h)}</th>' if i in numeric else f"<th>{e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    cls = ' class="cards"' if cards else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ranked_table(rows: list[Ranked], what: str) -> str:
    return table([what, "requests"], [[e(r.label), str(r.count)] for r in rows], {1}, cards=False)


def _when(ts: float) -> str:
    """``2027-01-15 09:06:25`` in a <time> carrying the full ISO stamp."""
    stamp = iso(ts)
    return f'<time datetime="{e(stamp)}">{e(stamp[:10])} {e(stamp[11:19])}</time>'


def alerts_table(alerts: list[Alert]) -> str:
    if not alerts:
        return '<p class="empty">No alerts. All quiet.</p>'
    rows = [
        [
            f'<span class="status-{e(a.status)}">{e(a.status)}</span>',
            e(a.rule),
            e(a.subject),
            e(a.message),
            _when(a.opened_at),
            _when(a.resolved_at) if a.resolved_at else "",
        ]
        for a in alerts[:50]
    ]
    return table(["status", "rule", "subject", "what", "opened", "resolved"], rows, wrap={2, 3})


def events_table(events: list[Event]) -> str:
    rows = [
        [
            _when(ev.ts),
            e(ev.type),
            e(ev.number_masked or ""),
            e(ev.client_ip or ""),
            e(ev.country or ""),
            e(ev.channel or ""),
            e(reason_label(ev.reason, ev.rule)),
        ]
        for ev in events
    ]
    return table(
        ["time", "type", "number", "ip", "country", "channel", "reason"], rows, wrap={3, 6}
    )


def webhooks_table(deliveries: list[WebhookDelivery]) -> str:
    """The newest webhook deliveries: what, to which endpoint, how it went."""
    if not deliveries:
        return '<p class="empty">No webhooks yet (docs/webhooks.md sets them up).</p>'
    rows = []
    for d in deliveries:
        last = d.last
        code = "" if last is None or last.status_code is None else str(last.status_code)
        rows.append(
            [_when(d.created_at), e(d.event_type), f'<span class="status-{e(d.status)}">'
             f"{e(d.status)}</span>", str(d.attempts), e(code), e(last.error if last else ""),
             e(d.endpoint_id)]
        )  # fmt: skip
    return table(
        ["time", "type", "status", "attempts", "code", "error", "endpoint"],
        rows,
        numeric={3},
        wrap={5, 6},
    )


def countries_table(countries: list[CountryFigures], currency: str) -> str:
    rows = [
        [
            e(c.country),
            str(c.started),
            str(c.approved),
            f"{c.conversion:.0%}" if c.conversion is not None else "-",
            str(c.sends),
            e(money(c.spend, currency)),
        ]
        for c in countries
    ]
    headers = ["country", "started", "approved", "conversion", "sent", "spend"]
    return table(headers, rows, {1, 2, 3, 4, 5})


def tiles(stats: Stats, open_alerts: int, currency: str) -> str:
    t = stats.totals
    conv = stats.conversion
    spend = f'{stats.spend:.2f} <span class="unit">{e(currency)}</span>'
    items = [
        ("requests", e(t["requests"]), ""),
        ("messages sent", e(t["sends"]), ""),
        ("approved", e(t["approved"]), ""),
        ("conversion", f"{conv:.0%}" if conv is not None else "-", ""),
        ("refused", e(t["refused"]), ""),
        ("delivery failures", e(t["delivery_failures"]), ""),
        ("estimated spend", spend, ""),
        ("open alerts", e(open_alerts), "alarm" if open_alerts else ""),
    ]
    return "".join(
        f'<div class="tile {cls}" data-tile="{e(k)}"><span class="v">{v}</span>'
        f'<span class="k">{e(k)}</span></div>'
        for k, v, cls in items
    )
