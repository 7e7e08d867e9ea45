"""Small server-rendered SVG charts. No JavaScript and no chart library: pages work without JS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .selectors import Histogram, UseSeries

# Colour-blind-friendly palette (Okabe–Ito), cycled per launch spec.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")

WIDTH = 560
HEIGHT = 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 36, 12, 12, 28


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


def pool_use_chart(series: Sequence[UseSeries]) -> SafeString:
    """One line per spec: EIPs in use over time, with the largest pool size as a dashed ceiling."""
    title = "EIPs in use per launch spec, last 24 h"
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
    for hours_ago in (24, 18, 12, 6, 0):
        moment = end - dt.timedelta(hours=hours_ago)
        label = "now" if hours_ago == 0 else f"-{hours_ago}h"
        parts.append(f'<text class="axis" x="{x(moment):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{label}</text>')
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        # A step line: the count holds until the next sample.
        coords: list[str] = []
        previous: float | None = None
        for moment, value in item.points:
            if previous is not None:
                coords.append(f"{x(moment):.1f},{y(previous):.1f}")
            coords.append(f"{x(moment):.1f},{y(value):.1f}")
            previous = value
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(coords)}">'
            f"<title>{escape(item.spec_name)}: {item.points[-1][1]} in use now of {item.pool_size}</title>"
            f"</polyline>"
        )
        if item.pool_size:
            parts.append(
                f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y(item.pool_size):.1f}" '
                f'y2="{y(item.pool_size):.1f}" stroke="{colour}" stroke-dasharray="4 4" opacity=".5"/>'
            )
    return _svg("".join(parts), title=title)


def chart_legend(series: Sequence[UseSeries]) -> list[tuple[str, str]]:
    return [(PALETTE[i % len(PALETTE)], s.spec_name) for i, s in enumerate(series)]


def histogram_chart(histogram: Histogram) -> SafeString:
    title = "Time from node first seen to EIP confirmed, last 24 h"
    if histogram.count == 0:
        return _svg('<text x="20" y="100" class="chart-empty">No node got an EIP in the last 24 h</text>', title=title)
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
            f'<text class="axis" x="{left + slot * 0.35:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    return _svg("".join(parts), title=title)
