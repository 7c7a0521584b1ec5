"""Small server-side SVG charts (no script, no external resource): a line chart, stacked bars and horizontal bars.

Each chart is an accessible image (``role="img"``, a ``<title>`` and a ``<desc>``), has labelled axes and a legend
when it has several series, and carries a ``data-testid``. The figures are also shown as text beside the chart.

Every data point drawn carries ``data-point="<series>|<label>|<value>"`` (HTML-escaped; ``value`` as a plain
number, e.g. ``5`` or ``0.965517``), and nothing else does (not the legend's swatches, the axes, the grid or the
labels), so the marked elements are exactly the figures drawn:

* a line chart marks each point's dot (``<circle>``): every value that is not missing, zero included;
* stacked bars mark each segment (``<rect>``) of a non-zero value; a zero value is not drawn;
* horizontal bars mark each bar (``<rect>``) of a non-zero value, the series being the chart's ``x_title``; a zero
  value keeps its label but draws no bar.

The value is the last ``|``-separated field; the labels of the line and stacked charts are days (``MM-DD``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Okabe–Ito: told apart by people with colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 48, 56
FONT = "font-family:system-ui,sans-serif;font-size:11px;fill:#333"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]


def _attr(text: object) -> str:
    return escape(str(text), quote=True)


def _point(series: str, label: str, value: float) -> str:
    """The ``data-point`` attribute of a data point drawn (see the module's docstring)."""
    return f' data-point="{_attr(f"{series}|{label}|{value:.12g}")}"'


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least ``value`` (1 for nothing)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def count_scale(largest: float) -> tuple[int, int]:
    """An axis for counts: its top and number of steps, every tick a whole number (at most 5 steps)."""
    step = max(1, int(nice_ceiling(largest / 4)))
    steps = max(1, math.ceil(largest / step))
    return step * steps, steps


def _frame(testid: str, title: str, desc: str, body: list[str], legend: Sequence[str] = ()) -> str:
    ident = _attr(testid)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%"'
             f' style="max-width:{WIDTH}px;background:#fff" data-testid="{ident}"'
             f' aria-labelledby="{ident}-title {ident}-desc">',
             f'<title id="{ident}-title">{escape(title)}</title><desc id="{ident}-desc">{escape(desc)}</desc>',
             f'<text x="{LEFT}" y="18" style="{FONT};font-size:13px;font-weight:600">{escape(title)}</text>']
    parts += body
    x = LEFT
    for n, name in enumerate(legend):  # a row under the title
        colour = PALETTE[n % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="25" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="34" style="{FONT}">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def _axes(x_title: str, y_title: str) -> list[str]:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    middle = (TOP + bottom) / 2
    return [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#555"/>',
            f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#555"/>',
            f'<text x="{(LEFT + right) / 2}" y="{HEIGHT - 8}" text-anchor="middle" style="{FONT}">'
            f'{escape(x_title)}</text>',
            f'<text x="14" y="{middle}" text-anchor="middle" transform="rotate(-90 14 {middle})"'
            f' style="{FONT}">{escape(y_title)}</text>']


def _y_ticks(low: float, high: float, fmt: Callable[[float], str], steps: int = 4) -> list[str]:
    parts, bottom = [], HEIGHT - BOTTOM
    for n in range(steps + 1):
        value = low + (high - low) * n / steps
        y = bottom - (bottom - TOP) * n / steps
        parts.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" style="{FONT}">'
                     f'{escape(fmt(value))}</text>')
    return parts


def _x_labels(labels: Sequence[str], centre: Callable[[int], float], most: int = 8) -> list[str]:
    """At most ``most`` labels, evenly spaced, counted back from the last (today is always labelled)."""
    every = max(1, math.ceil(len(labels) / most))
    bottom = HEIGHT - BOTTOM
    return [f'<text x="{centre(n):.1f}" y="{bottom + 16}" text-anchor="middle" style="{FONT}">'
            f"{escape(labels[n])}</text>" for n in range(len(labels) - 1, -1, -every)]


def _empty(testid: str, title: str, x_title: str, y_title: str) -> str:
    note = (f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" style="{FONT};font-size:13px">'
            "No data in this window</text>")
    return _frame(testid, title, "No data in this window.", [*_axes(x_title, y_title), note])


def _runs(values: Sequence[float | None]) -> list[list[int]]:
    """Indexes of the stretches without a missing value."""
    runs, current = [], []
    for i, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(i)
    return [*runs, current] if current else runs


def line_chart(*, testid: str, title: str, labels: Sequence[str], series: Sequence[Series], x_title: str,
               y_title: str, fmt: Callable[[float], str], low: float, high: float) -> str:
    """One line per series over ``labels``; a missing value (None) breaks the line (a lone point is a dot)."""
    if not labels or all(v is None for s in series for v in s.values):
        return _empty(testid, title, x_title, y_title)
    span, bottom = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM

    def x(n: int) -> float:
        return LEFT + (span * (n + 0.5) / len(labels))

    def y(value: float) -> float:
        return bottom - (bottom - TOP) * (value - low) / ((high - low) or 1)

    body = [*_axes(x_title, y_title), *_y_ticks(low, high, fmt), *_x_labels(labels, x)]
    for n, line in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        points = [(x(i), y(v), labels[i], v) for i, v in enumerate(line.values) if v is not None]
        for run in _runs(line.values):
            if len(run) > 1:
                joined = " ".join(f"{x(i):.1f},{y(line.values[i]):.1f}" for i in run)
                body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{joined}"/>')
        body += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"{_point(line.name, label, v)}>'
                 f'<title>{escape(line.name)}, {escape(label)}: {escape(fmt(v))}</title></circle>'
                 for px, py, label, v in points]
    desc = "; ".join(f"{s.name}: " + ", ".join(f"{labels[i]} {fmt(v)}" for i, v in enumerate(s.values)
                                                 if v is not None) for s in series)
    return _frame(testid, title, desc, body, [s.name for s in series] if len(series) > 1 else ())


def stacked_bars(*, testid: str, title: str, labels: Sequence[str], series: Sequence[Series], x_title: str,
                 y_title: str) -> str:
    """A bar per label, stacked by series (counts)."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(testid, title, x_title, y_title)
    (top, steps), span, bottom = count_scale(max(totals)), WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM
    slot = span / len(labels)

    def x(n: int) -> float:
        return LEFT + slot * (n + 0.5)

    body = [*_axes(x_title, y_title), *_y_ticks(0, top, lambda v: f"{v:g}", steps), *_x_labels(labels, x)]
    width = max(1.0, slot * 0.7)
    for i, label in enumerate(labels):
        base = bottom
        for n, part in enumerate(series):
            value = part.values[i] or 0
            if not value:
                continue
            height = (bottom - TOP) * value / top
            base -= height
            body.append(f'<rect x="{x(i) - width / 2:.1f}" y="{base:.1f}" width="{width:.1f}" height="{height:.1f}"'
                        f' fill="{PALETTE[n % len(PALETTE)]}"{_point(part.name, label, value)}>'
                        f'<title>{escape(label)}, {escape(part.name)}: '
                        f'{value:g}</title></rect>')
    desc = "; ".join(f"{label}: {total:g}" for label, total in zip(labels, totals, strict=True) if total)
    return _frame(testid, title, desc, body, [s.name for s in series])


def horizontal_bars(*, testid: str, title: str, items: Sequence[tuple[str, float]], x_title: str) -> str:
    """One bar per item (counts), longest first as given."""
    if not items:
        return _empty(testid, title, x_title, "")
    left, bottom = 220, HEIGHT - BOTTOM
    top, steps = count_scale(max(v for _, v in items))
    span = WIDTH - left - RIGHT
    slot = (bottom - TOP) / len(items)
    body = [f'<line x1="{left}" y1="{TOP}" x2="{left}" y2="{bottom}" stroke="#555"/>',
            f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#555"/>',
            f'<text x="{left + span / 2}" y="{HEIGHT - 8}" text-anchor="middle" style="{FONT}">'
            f'{escape(x_title)}</text>']
    for n in range(steps + 1):
        value, gx = top * n / steps, left + span * n / steps
        body.append(f'<line x1="{gx:.1f}" y1="{TOP}" x2="{gx:.1f}" y2="{bottom + 4}" stroke="#e3e3e3"/>'
                    f'<text x="{gx:.1f}" y="{bottom + 16}" text-anchor="middle" style="{FONT}">{value:g}</text>')
    for n, (label, value) in enumerate(items):
        y = TOP + slot * n + slot * 0.15
        if value:
            body.append(f'<rect x="{left}" y="{y:.1f}" width="{span * value / top:.1f}" height="{slot * 0.7:.1f}"'
                        f' fill="{PALETTE[0]}"{_point(x_title, label, value)}><title>{escape(label)}: {value:g}'
                        "</title></rect>")
        body.append(f'<text x="{left - 6}" y="{y + slot * 0.35 + 4:.1f}" text-anchor="end" style="{FONT}">'
                    f'{escape(label)}</text>')
    return _frame(testid, title, "; ".join(f"{label}: {value:g}" for label, value in items), body)
