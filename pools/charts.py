"""Small server-rendered SVG charts. No JavaScript and no chart library: pages work without JS."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .selectors import Histogram, UseSeries

# Line colours with at least 3:1 contrast against the card (WCAG 1.4.11 for graphics), told apart by hue
# (after Okabe–Ito, darkened; no yellow). A spec keeps its colour whatever the order or number of specs:
# the colour comes from its name.
PALETTE = ("#0072B2", "#D55E00", "#007A5A", "#B0487F", "#6A3D9A", "#9A6700", "#1B7F95", "#3B3B3B")

WIDTH = 560
HEIGHT = 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 12, 12, 44

# The range picker of the pool-use chart: key → (hours, sample step in minutes, label).
RANGES: dict[str, tuple[int, int, str]] = {
    "1h": (1, 2, "1 h"),
    "6h": (6, 10, "6 h"),
    "24h": (24, 30, "24 h"),
    "7d": (168, 180, "7 d"),
}
DEFAULT_RANGE_CAP = "24h"  # a fitted default never picks more than a day: a week is on request


def spec_colour(name: str) -> str:
    """The line colour of a launch spec, from its name (stable across pages, reloads and new specs)."""
    return PALETTE[zlib.crc32(name.encode("utf-8")) % len(PALETTE)]


def fitted_range(data_start: dt.datetime | None, now: dt.datetime) -> str:
    """The smallest range that holds all the data (a 10-minute-old install gets 1 h, not one spike at "now")."""
    if data_start is None:
        return "1h"
    age = now - data_start
    for key, (hours, _step, _label) in RANGES.items():
        if age <= dt.timedelta(hours=hours) or key == DEFAULT_RANGE_CAP:
            return key
    return DEFAULT_RANGE_CAP


def _svg(body: str, *, title: str, height: int = HEIGHT) -> SafeString:
    return mark_safe(  # safe: every interpolated text value below goes through escape()
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
    )


def _nice_max(value: int) -> int:
    """The smallest 4 × (1, 2, 5, 10, …) that holds value: four round gridlines."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if value <= 4 * step * factor:
                return 4 * step * factor
        step *= 10


def _ago(delta: dt.timedelta, span_hours: float) -> str:
    seconds = delta.total_seconds()
    if seconds <= 0:
        return "now"
    if span_hours <= 1:
        return f"−{round(seconds / 60)} min"
    if span_hours <= 24:
        return f"−{seconds / 3600:g} h"
    return f"−{seconds / 86400:g} d"


def _axis_titles(x_title: str, y_title: str) -> str:
    plot_mid_y = PAD_TOP + (HEIGHT - PAD_TOP - PAD_BOTTOM) / 2
    return (
        f'<text class="axis-title" x="{PAD_LEFT + (WIDTH - PAD_LEFT - PAD_RIGHT) / 2:.1f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{escape(x_title)}</text>'
        f'<text class="axis-title" x="12" y="{plot_mid_y:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {plot_mid_y:.1f})">{escape(y_title)}</text>'
    )


def pool_use_chart(series: Sequence[UseSeries], *, range_key: str = "24h",
                   data_start: dt.datetime | None = None) -> SafeString:
    """One step line per spec: EIPs in use over time, each spec's pool size as a dashed ceiling.

    No line is drawn before data_start (the first assignment eipdash ever recorded): an install younger than
    the range shows its lines from where its data begins, not a flat zero that never happened.
    """
    hours, _step, label = RANGES.get(range_key, RANGES["24h"])
    title = f"EIPs in use per launch spec, last {label}"
    if not series or not series[0].points:
        return _svg('<text x="20" y="100" class="chart-empty">No launch specs yet</text>', title=title)
    top = max([s.pool_size for s in series] + [v for s in series for _, v in s.points] + [1])
    y_max = _nice_max(top)
    start = series[0].points[0][0]
    end = series[0].points[-1][0]
    span = max((end - start).total_seconds(), 1.0)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(moment: dt.datetime) -> float:
        return PAD_LEFT + plot_w * (moment - start).total_seconds() / span

    def y(value: float) -> float:
        return PAD_TOP + plot_h * (1 - value / y_max)

    parts: list[str] = []
    for i in range(5):
        value = y_max * i / 4
        level = y(value)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{level:.1f}" y2="{level:.1f}"/>'
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{level + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    for i in range(5):
        moment = start + (end - start) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(f'<text class="axis" x="{x(moment):.1f}" y="{HEIGHT - 24}" text-anchor="{anchor}">'
                     f"{escape(_ago(end - moment, hours))}</text>")
    if data_start is not None and data_start > start:
        # Where the record begins: left of it there is no data, and no line.
        parts.append(f'<line class="data-start" x1="{x(data_start):.1f}" x2="{x(data_start):.1f}" y1="{PAD_TOP}" '
                     f'y2="{PAD_TOP + plot_h}"><title>first data</title></line>')
    parts.append(_axis_titles("time (UTC), now at the right", "EIPs in use"))
    for item in series:
        colour = spec_colour(item.spec_name)
        # A step line: the count holds until the next sample. Samples before the data starts are left out.
        points = [(moment, value) for moment, value in item.points
                  if data_start is None or moment >= data_start - dt.timedelta(seconds=1)]
        coords: list[str] = []
        previous: float | None = None
        for moment, value in points:
            if previous is not None:
                coords.append(f"{x(moment):.1f},{y(previous):.1f}")
            coords.append(f"{x(moment):.1f},{y(value):.1f}")
            previous = value
        if coords:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="{" ".join(coords)}" '
                f'data-spec="{escape(item.spec_name)}">'
                f"<title>{escape(item.spec_name)}: {item.points[-1][1]} in use now of {item.pool_size}</title>"
                f"</polyline>"
            )
        if item.pool_size:
            parts.append(
                f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y(item.pool_size):.1f}" '
                f'y2="{y(item.pool_size):.1f}" stroke="{colour}" stroke-dasharray="4 4" opacity=".6"/>'
            )
    return _svg("".join(parts), title=title)


def chart_legend(series: Sequence[UseSeries]) -> list[tuple[str, str]]:
    return [(spec_colour(s.spec_name), s.spec_name) for s in series]


def histogram_chart(histogram: Histogram, *, range_label: str = "24 h") -> SafeString:
    title = f"Time from node first seen to EIP confirmed, last {range_label}"
    if histogram.count == 0:
        return _svg(f'<text x="20" y="100" class="chart-empty">No node got an EIP in the last {escape(range_label)}'
                    "</text>", title=title)
    y_max = _nice_max(max(count for _, count in histogram.buckets))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / len(histogram.buckets)
    parts: list[str] = []
    for i in range(5):
        value = y_max * i / 4
        y = PAD_TOP + plot_h * (1 - value / y_max)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    for index, (label, count) in enumerate(histogram.buckets):
        bar_h = plot_h * count / y_max
        left = PAD_LEFT + slot * index + slot * 0.15
        parts.append(
            f'<rect class="bar" x="{left:.1f}" y="{PAD_TOP + plot_h - bar_h:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{bar_h:.1f}"><title>{escape(label)}: {count} nodes</title></rect>'
            f'<text class="axis" x="{left + slot * 0.35:.1f}" y="{HEIGHT - 24}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(_axis_titles("time from first seen to EIP confirmed", "nodes"))
    return _svg("".join(parts), title=title)
