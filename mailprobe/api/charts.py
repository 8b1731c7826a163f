"""Inline SVG charts for the dashboard, drawn here as text: no script, no CDN, no library.

Owns the drawing only: each chart takes labelled numbers and returns one accessible `<svg>`
(`role="img"`, a `<title>` and a `<desc>`, a `<title>` per bar for its exact figure). Colour is
never the only cue: every kind (`k-valid`, `k-failed`…) also has its own fill pattern, and the
page lists the figures as a table beside the chart.

Written by hand, not with a chart library: the Python ones (pygal, leather) either load their
own scripts from a CDN for tooltips or emit SVG without titles and descriptions, and these
three shapes fit in a page of code.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_ids = itertools.count(1)

#: Fill per kind: (colour, pattern drawn over it in white, or "" for a solid fill).
KINDS: Mapping[str, tuple[str, str]] = {
    # statuses
    "valid": ("#2e7d32", ""),
    "catch_all": ("#b58900", "lines"),
    "risky": ("#e65100", "cross"),
    "invalid": ("#c62828", "diagonal"),
    "unknown": ("#607d8b", "dots"),
    # pass outcomes
    "ok": ("#2e7d32", ""),
    "running": ("#1565c0", "lines"),
    "failed": ("#e65100", "diagonal"),
    "fatal": ("#c62828", "cross"),
    "stopped": ("#607d8b", "dots"),
    "interrupted": ("#607d8b", "dots"),
    # queue
    "waiting": ("#1565c0", ""),
    "to_write": ("#6a1b9a", "diagonal"),
    "deferred": ("#e65100", "diagonal"),
}

_MARKS = {
    "lines": '<path d="M0 2H6" stroke="#fff" stroke-width="1.4" opacity=".6"/>',
    "diagonal": '<path d="M0 6L6 0M-1 1L1 -1M5 7L7 5" stroke="#fff" stroke-width="1.4" '
    'opacity=".6"/>',
    "cross": '<path d="M0 6L6 0M0 0L6 6" stroke="#fff" stroke-width="1.1" opacity=".6"/>',
    "dots": '<circle cx="3" cy="3" r="1.2" fill="#fff" opacity=".7"/>',
}


@dataclass(frozen=True, slots=True)
class Series:
    """One stacked part of a chart: its kind (colour and pattern) and what the legend says."""

    kind: str
    label: str


def e(text: object) -> str:
    """Return text escaped for HTML and SVG, quotes included."""
    return html.escape(str(text), quote=True)


def fill_defs() -> str:
    """Return the hidden `<svg>` of fill patterns every chart on the page refers to."""
    patterns = []
    for kind, (colour, mark) in KINDS.items():
        patterns.append(
            f'<pattern id="fill-{kind}" width="6" height="6" patternUnits="userSpaceOnUse">'
            f'<rect width="6" height="6" fill="{colour}"/>{_MARKS.get(mark, "")}</pattern>'
        )
    return (
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true" focusable="false">'
        f"<defs>{''.join(patterns)}</defs></svg>"
    )


def swatch(kind: str) -> str:
    """Return a small legend square in the kind's colour and pattern."""
    return (
        '<svg class="swatch" width="14" height="14" viewBox="0 0 14 14" aria-hidden="true">'
        f'<rect width="14" height="14" rx="2" fill="url(#fill-{e(kind)})"/></svg>'
    )


def legend(series: Sequence[Series], totals: Mapping[str, int] | None = None) -> str:
    """Return the legend as an HTML list: swatch, label and (when given) the total."""
    items = "".join(
        f"<li>{swatch(s.kind)} {e(s.label)}"
        + (f" <b>{totals.get(s.kind, 0):,}</b>" if totals is not None else "")
        + "</li>"
        for s in series
    )
    return f'<ul class="legend">{items}</ul>'


def _open(title: str, desc: str, width: int, height: int) -> str:
    n = next(_ids)
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart{n}-t chart{n}-d" preserveAspectRatio="xMidYMid meet">'
        f'<title id="chart{n}-t">{e(title)}</title><desc id="chart{n}-d">{e(desc)}</desc>'
    )


def nice_step(value: float) -> int:
    """Return a round gridline step at or above `value`: 1, 2 or 5 (or 25) times a power of ten."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    steps = (1, 2, 2.5, 5, 10) if power >= 10 else (1, 2, 5, 10)
    return next(int(step * power) for step in steps if value <= step * power)


def axis(value: int) -> tuple[int, int]:
    """Return the axis maximum at or above `value` and its number of gridline steps (4 or 5),
    choosing the lower maximum: 44 gets 50 in steps of 10, not 80 in steps of 20."""
    return min((n * nice_step(value / n), n) for n in (4, 5))


def stacked_columns(
    *,
    title: str,
    desc: str,
    columns: Sequence[str],
    column_labels: Sequence[str],
    series: Sequence[Series],
    values: Mapping[str, Sequence[int]],
    width: int = 1100,
    height: int = 280,
    slots: int = 0,
) -> str:
    """Return a column chart, one stacked column per entry of `columns` (a day, a pass…).

    `values[kind][i]` is the height of kind's part of column i; `column_labels` are shown
    under the columns (empty strings are skipped, so a long axis can label every 7th).
    With `slots` above the number of columns, columns keep that narrow width, flush right.
    """
    left, right, top, bottom = 48, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values.get(s.kind, [0] * len(columns))[i] for s in series)
              for i in range(len(columns))]  # fmt: skip
    ceiling, steps = axis(max(totals, default=0))
    parts = [_open(title, desc, width, height), _grid(left, top, plot_w, plot_h, ceiling, steps)]
    slot = plot_w / max(1, len(columns), slots)
    bar_w = max(1.0, slot * 0.72)
    offset = left + plot_w - slot * len(columns)
    for i, column in enumerate(columns):
        x = offset + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        for s in series:
            count = values.get(s.kind, [0] * len(columns))[i]
            if count <= 0:
                continue
            h = plot_h * count / ceiling
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="url(#fill-{e(s.kind)})"><title>{e(column)}: {count:,} {e(s.label)}'
                "</title></rect>"
            )
        if column_labels[i]:
            parts.append(
                f'<text class="axis" x="{offset + i * slot + slot / 2:.1f}" y="{height - 8}" '
                f'text-anchor="middle">{e(column_labels[i])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _grid(left: int, top: int, width: int, height: int, ceiling: int, steps: int) -> str:
    """Return the value axis: the base line and a gridline with its figure per step."""
    lines = []
    for step in range(steps + 1):
        value = ceiling * step / steps
        y = top + height - height * step / steps
        label = f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
        lines.append(
            f'<line class="{"base" if step == 0 else "grid"}" x1="{left}" x2="{left + width}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    return "".join(lines)


def share_bar(*, title: str, parts: Sequence[tuple[Series, int]], width: int = 1100) -> str:
    """Return one horizontal bar split into each part's share of the whole."""
    height = 26
    total = sum(count for _, count in parts)
    shares = ", ".join(f"{s.label} {count:,}" for s, count in parts)
    out = [_open(title, f"{total:,} in all: {shares}.", width, height)]
    x = 0.0
    for s, count in parts:
        if count <= 0 or total == 0:
            continue
        w = width * count / total
        out.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" '
            f'fill="url(#fill-{e(s.kind)})"><title>{e(s.label)}: {count:,} '
            f"({100 * count / total:.1f} %)</title></rect>"
        )
        x += w
    if total == 0:
        out.append(f'<rect class="empty" width="{width}" height="{height}"/>')
    out.append("</svg>")
    return "".join(out)


def meter_rows(
    *, title: str, rows: Sequence[tuple[str, Sequence[tuple[Series, int]]]], width: int = 560
) -> str:
    """Return horizontal bars, one labelled row per entry, each stacked from its parts."""
    row_h, label_w, value_w = 30, 130, 70
    height = max(1, len(rows)) * row_h
    ceiling, _ = axis(max((sum(c for _, c in parts) for _, parts in rows), default=0))
    plot_w = width - label_w - value_w
    desc = "; ".join(
        f"{name}: " + ", ".join(f"{s.label} {c:,}" for s, c in parts) for name, parts in rows
    )
    out = [_open(title, desc or "Nothing to show.", width, height)]
    for i, (name, parts) in enumerate(rows):
        y = i * row_h
        out.append(
            f'<text class="label" x="0" y="{y + 19}">{e(_clip(name, 18))}</text>'
            f'<rect class="track" x="{label_w}" y="{y + 6}" width="{plot_w}" height="16" rx="3"/>'
        )
        x = float(label_w)
        for s, count in parts:
            if count <= 0:
                continue
            w = plot_w * count / ceiling
            out.append(
                f'<rect x="{x:.1f}" y="{y + 6}" width="{w:.1f}" height="16" '
                f'fill="url(#fill-{e(s.kind)})"><title>{e(name)}: {count:,} {e(s.label)}'
                "</title></rect>"
            )
            x += w
        total = sum(c for _, c in parts)
        out.append(
            f'<text class="value" x="{width}" y="{y + 19}" text-anchor="end">{total:,}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
