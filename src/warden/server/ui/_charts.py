"""Charts for the dashboards, drawn on the server as inline SVG (no script, no inline
style: the console's Content-Security-Policy allows neither): the geometry is computed
here, ``_chart.html`` draws it with classes from console.css and SVG attributes.

Every chart carries its figures as rows too: the page shows them as a table beside it, so
a chart reads without sight and without script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 180
_LEFT = 56  # room for the scale's labels
_TOP = 12
_BOTTOM = 28  # room for the time labels
_ROW = 24  # one bar of a bar list
_LABEL_W = 200  # the bar list's names
_VALUE_W = 90  # the bar list's values


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    #: what the bar is (a period, a rule, a tenant) and its value as shown
    label: str
    text: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    #: one sentence: what the chart shows, its largest value
    summary: str
    kind: str  # "columns" (a series over time) or "bars" (a ranked list)
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    #: the figures as table rows: (name, value as shown)
    header: tuple[str, str]
    rows: tuple[tuple[str, str], ...]
    #: drawn from where (columns: the x axis' y; bars: the bars' left edge)
    base: float = 0.0


def _nice(top: float) -> float:
    """A round number at or above ``top`` for the scale (1, 2, 2.5, 5 x 10^n)."""
    if top <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= top:
        scale *= 10
    while scale > top:
        scale /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= top:
            return step * scale
    return 10 * scale  # pragma: no cover - the loop ends at 10


def columns(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float | None, str]],
    *,
    header: tuple[str, str],
    scale_text: str = "{:g}",
    top: float | None = None,
) -> Chart:
    """A series over time: one column per ``(label, value, value as shown)``; a value of
    None (nothing to measure then) gets no column and reads "no runs"."""
    n = max(1, len(points))
    plot_w, plot_h = WIDTH - _LEFT - 8, HEIGHT - _TOP - _BOTTOM
    values = [v for _, v, _ in points if v is not None]
    highest = top if top is not None else _nice(max(values, default=0.0))
    slot = plot_w / n
    base = _TOP + plot_h
    bars = []
    for i, (label, value, text) in enumerate(points):
        if value is None:
            continue
        h = plot_h * value / highest if highest else 0.0
        bars.append(
            Bar(
                x=round(_LEFT + i * slot + slot * 0.1, 2),
                y=round(base - h, 2),
                w=round(max(1.0, slot * 0.8), 2),
                h=round(h, 2),
                label=label,
                text=text,
            )
        )
    marks = sorted({0, (n - 1) // 2, n - 1}) if points else []
    ticks = [Tick(round(_LEFT + i * slot + slot / 2, 2), HEIGHT - 8, points[i][0]) for i in marks]
    ticks += [
        Tick(_LEFT - 6, _TOP + 4, scale_text.format(highest), "end"),
        Tick(_LEFT - 6, base, scale_text.format(0), "end"),
    ]
    largest = max(
        ((v, label, text) for label, v, text in points if v is not None),
        default=None,
        key=lambda t: t[0],
    )
    summary = f"{title}, {len(points)} periods"
    if largest is None:
        summary += ": no runs"
    else:
        summary += f"; highest {largest[2]} ({largest[1]})"
    return Chart(
        id=chart_id,
        title=title,
        summary=summary,
        kind="columns",
        width=WIDTH,
        height=HEIGHT,
        bars=tuple(bars),
        ticks=tuple(ticks),
        header=header,
        rows=tuple((label, text if v is not None else "no runs") for label, v, text in points),
        base=base,
    )


def bar_list(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float, str]],
    *,
    header: tuple[str, str],
) -> Chart:
    """A ranked list: one horizontal bar per ``(name, value, value as shown)``."""
    highest = max((v for _, v, _ in items), default=0.0) or 1.0
    room = WIDTH - _LABEL_W - _VALUE_W
    bars = []
    ticks = []
    for i, (name, value, text) in enumerate(items):
        y = i * _ROW + 4
        w = room * value / highest
        bars.append(Bar(_LABEL_W, y, round(max(w, 1.0), 2), _ROW - 8, name, text))
        shown = name if len(name) <= 26 else name[:25] + "…"
        ticks.append(Tick(_LABEL_W - 6, y + _ROW / 2 + 1, shown, "end"))
        ticks.append(Tick(round(_LABEL_W + max(w, 1.0) + 6, 2), y + _ROW / 2 + 1, text, "start"))
    summary = f"{title}: " + (
        "; ".join(f"{name} {text}" for name, _, text in items[:5]) if items else "none"
    )
    if len(items) > 5:
        summary += f"; and {len(items) - 5} more"
    return Chart(
        id=chart_id,
        title=title,
        summary=summary,
        kind="bars",
        width=WIDTH,
        height=max(_ROW, len(items) * _ROW + 4),
        bars=tuple(bars),
        ticks=tuple(ticks),
        header=header,
        rows=tuple((name, text) for name, _, text in items),
        base=_LABEL_W,
    )


__all__ = ["Bar", "Chart", "Tick", "bar_list", "columns"]
