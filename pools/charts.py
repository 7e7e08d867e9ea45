"""Small server-rendered SVG charts. No JavaScript and no chart library: pages work without JS."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .selectors import Histogram, UseSeries

# Line colours with at least 3:1 contrast against the card (WCAG 1.4.11 for graphics), told apart by hue
# (after Okabe–Ito, darkened; no yellow, no teal: it passed for the blue, nor orange: darkened it passed for the
# vermillion). A spec's colour comes from its name (series_styles), so it does not move with the order of specs.
PALETTE = ("#0072B2", "#D55E00", "#007A5A", "#B0487F", "#6A3D9A", "#3B3B3B")
# Never by colour alone (WCAG 1.4.1): each style slot has a line pattern and a point marker too, no two slots the
# same pair. Slot i has the colour PALETTE[i % 6]: the first six differ by colour as well, the next six reuse
# the colours with other lines and markers.
DASHES = ("", "9 4", "2 3", "9 3 2 3", "", "9 4", "2 3", "9 3 2 3", "", "9 4", "2 3", "9 3 2 3")
MARKERS = ("circle", "square", "triangle", "diamond", "square", "triangle",
           "circle", "square", "triangle", "diamond", "diamond", "circle")

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
    """The line colour a launch spec prefers, from its name (stable across pages, reloads and new specs)."""
    return PALETTE[_preferred_slot(name)]


def _preferred_slot(name: str) -> int:
    return zlib.crc32(name.encode("utf-8")) % len(PALETTE)


@dataclass(frozen=True)
class SeriesStyle:
    colour: str
    dash: str  # an SVG stroke-dasharray; "" for a solid line
    marker: str  # circle, square, triangle or diamond


def series_styles(names: Sequence[str]) -> dict[str, SeriesStyle]:
    """Each spec's style slot: the colour its name prefers, else the next free colour, else the same colours with
    other lines and markers (names in order, so that two specs of one chart share no slot while slots are left).
    A spec keeps its style as long as no spec before it (by name) wants the same slot."""
    taken: set[int] = set()
    styles: dict[str, SeriesStyle] = {}
    colours = len(PALETTE)
    for name in sorted(set(names)):
        preferred = _preferred_slot(name)
        order = [(preferred + k) % colours for k in range(colours)]
        free = [slot for slot in order + [colours + slot for slot in order] if slot not in taken]
        slot = free[0] if free else preferred  # more specs than slots: styles repeat
        taken.add(slot)
        styles[name] = SeriesStyle(PALETTE[slot % colours], DASHES[slot], MARKERS[slot])
    return styles


def marker_svg(marker: str, x: float, y: float, size: float = 3.2) -> str:
    """One point marker centred on (x, y), without its closing tag (a <title> goes inside)."""
    if marker == "square":
        half = size * .85
        return f'<rect x="{x - half:.1f}" y="{y - half:.1f}" width="{2 * half:.1f}" height="{2 * half:.1f}"'
    if marker == "triangle":
        return (f'<path d="M{x:.1f},{y - size * 1.15:.1f} L{x + size:.1f},{y + size * .75:.1f} '
                f'L{x - size:.1f},{y + size * .75:.1f} Z"')
    if marker == "diamond":
        return (f'<path d="M{x:.1f},{y - size * 1.2:.1f} L{x + size * 1.2:.1f},{y:.1f} L{x:.1f},{y + size * 1.2:.1f} '
                f'L{x - size * 1.2:.1f},{y:.1f} Z"')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}"'


def _marker_tag(marker: str) -> str:
    return {"square": "rect", "triangle": "path", "diamond": "path"}.get(marker, "circle")


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


def _axis_grid(frame: _Frame) -> list[str]:
    """Five grid lines with their values, and five time labels (ago from the frame's end): every time chart's."""
    parts = []
    for i in range(5):
        value = frame.y_max * i / 4
        level = frame.y(value)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{level:.1f}" y2="{level:.1f}"/>'
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{level + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    for i in range(5):
        moment = frame.start + (frame.end - frame.start) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(f'<text class="axis" x="{frame.x(moment):.1f}" y="{HEIGHT - 24}" text-anchor="{anchor}">'
                     f"{escape(_ago(frame.end - moment, frame.hours))}</text>")
    return parts


def _axis_titles(x_title: str, y_title: str) -> str:
    plot_mid_y = PAD_TOP + (HEIGHT - PAD_TOP - PAD_BOTTOM) / 2
    return (
        f'<text class="axis-title" x="{PAD_LEFT + (WIDTH - PAD_LEFT - PAD_RIGHT) / 2:.1f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{escape(x_title)}</text>'
        f'<text class="axis-title" x="12" y="{plot_mid_y:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {plot_mid_y:.1f})">{escape(y_title)}</text>'
    )


def _moment_text(moment: dt.datetime, hours: int) -> str:
    """A sample's time, as precise as the range needs: 14:20, or Mon 02 14:20 over more than a day (UTC)."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%H:%M") if hours <= 24 else utc.strftime("%a %d %H:%M")


@dataclass(frozen=True)
class _Frame:
    """The pool-use chart's plot area: a time range across, 0..y_max up."""

    start: dt.datetime
    end: dt.datetime
    y_max: int
    hours: int

    @property
    def plot_h(self) -> int:
        return HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(self, moment: dt.datetime) -> float:
        span = max((self.end - self.start).total_seconds(), 1.0)
        return PAD_LEFT + (WIDTH - PAD_LEFT - PAD_RIGHT) * (moment - self.start).total_seconds() / span

    def y(self, value: float) -> float:
        return PAD_TOP + self.plot_h * (1 - value / self.y_max)


def pool_use_chart(series: Sequence[UseSeries], *, range_key: str = "24h",
                   data_start: dt.datetime | None = None) -> SafeString:
    """One step line per spec: EIPs in use over time, each spec's pool size as a thin dotted ceiling.

    The x axis spans the whole range. No line is drawn before data_start (the first event eipdash ever
    recorded): an install younger than the range shows a grey band saying "no data before HH:MM" there, not
    a flat zero that never happened. Series differ by colour, line pattern and marker (series_styles), and
    each sample is a marker whose <title> gives its value on hover.
    """
    hours, _step, label = RANGES.get(range_key, RANGES["24h"])
    title = f"EIPs in use per launch spec, last {label}"
    if not series or not series[0].points:
        return _svg('<text x="20" y="100" class="chart-empty">No launch specs yet</text>', title=title)
    top = max([s.pool_size for s in series] + [v for s in series for _, v in s.points] + [1])
    frame = _Frame(start=series[0].points[0][0], end=series[0].points[-1][0], y_max=_nice_max(top), hours=hours)
    starts_inside = data_start is not None and data_start > frame.start
    parts: list[str] = _no_data_band(frame, data_start) if data_start is not None and starts_inside else []
    parts += _axis_grid(frame)
    if data_start is not None and starts_inside:
        parts.append(f'<line class="data-start" x1="{frame.x(data_start):.1f}" x2="{frame.x(data_start):.1f}" '
                     f'y1="{PAD_TOP}" y2="{PAD_TOP + frame.plot_h}"><title>first data</title></line>')
    parts.append(_axis_titles("time (UTC), now at the right", "EIPs in use"))
    styles = series_styles([item.spec_name for item in series])
    # Every series is sampled at the same moments: each moment's x and words once, not once per spec.
    moments: dict[dt.datetime, tuple[float, str]] = {}
    for item in series:
        for moment, _value in item.points:
            if moment not in moments:
                moments[moment] = (frame.x(moment), _moment_text(moment, frame.hours))
    for item in series:
        parts += _series(frame, item, styles[item.spec_name], data_start, moments)
    return _svg("".join(parts), title=title)


def _no_data_band(frame: _Frame, data_start: dt.datetime) -> list[str]:
    """Where the record begins: left of it there is no data, and no line. Said in words on the band (right of
    the band's edge when it is too narrow for them)."""
    left = min(frame.x(data_start), WIDTH - PAD_RIGHT)
    note = escape(f"no data before {_moment_text(data_start, frame.hours)} UTC")
    parts = [f'<rect class="no-data" x="{PAD_LEFT}" y="{PAD_TOP}" width="{left - PAD_LEFT:.1f}" '
             f'height="{frame.plot_h}"><title>{note}</title></rect>']
    if left - PAD_LEFT >= 220:  # room for the words at a phone's larger text size
        parts.append(f'<text class="no-data-text" x="{(PAD_LEFT + left) / 2:.1f}" '
                     f'y="{PAD_TOP + frame.plot_h / 2:.1f}" text-anchor="middle">{note}</text>')
    else:
        parts.append(f'<text class="no-data-text" x="{left + 4:.1f}" y="{PAD_TOP + 12}" '
                     f'text-anchor="start">{note}</text>')
    return parts


def _series(frame: _Frame, item: UseSeries, style: SeriesStyle, data_start: dt.datetime | None,
            moments: dict[dt.datetime, tuple[float, str]]) -> list[str]:
    """One spec: its pool ceiling, its step line, and a marker per sample that says its value on hover.
    moments: each sample's x and time in words."""
    name = escape(item.spec_name)
    parts: list[str] = []
    if item.pool_size:
        level = frame.y(item.pool_size)
        parts.append(
            f'<line class="ceiling" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{level:.1f}" y2="{level:.1f}" '
            f'stroke="{style.colour}" stroke-dasharray="1 3"><title>{name}: pool of {item.pool_size}</title></line>'
        )
    # A step line: the count holds until the next sample. Samples before the data starts are left out.
    points = [(moment, value) for moment, value in item.points
              if data_start is None or moment >= data_start - dt.timedelta(seconds=1)]
    if not points:
        return parts
    ys: dict[int, float] = {}
    for _moment, value in points:
        if value not in ys:
            ys[value] = frame.y(value)
    coords: list[str] = []
    previous: int | None = None
    for moment, value in points:
        x = moments[moment][0]
        if previous is not None:
            coords.append(f"{x:.1f},{ys[previous]:.1f}")
        coords.append(f"{x:.1f},{ys[value]:.1f}")
        previous = value
    dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
    parts.append(
        f'<g class="series" data-spec="{name}" fill="{style.colour}">'
        f'<polyline fill="none" stroke="{style.colour}" stroke-width="2.5"{dash} points="{" ".join(coords)}">'
        f"<title>{name}: {item.points[-1][1]} in use now of {item.pool_size}</title></polyline>"
    )
    tag = _marker_tag(style.marker)
    for index, (moment, value) in enumerate(points):
        # Shown where the line starts, steps and ends; the others appear under the pointer only (fully
        # transparent, they still take it), so that a flat line is not a row of beads.
        shown = index in (0, len(points) - 1) or value != points[index - 1][1]
        x, when = moments[moment]
        parts.append(
            f'{marker_svg(style.marker, x, ys[value])} class="point{"" if shown else " quiet"}">'
            f"<title>{name}: {value} in use at {when} UTC (pool {item.pool_size})"
            f"</title></{tag}>"
        )
    parts.append("</g>")
    return parts


@dataclass(frozen=True)
class LegendEntry:
    name: str
    colour: str
    dash: str
    marker: str

    @property
    def swatch(self) -> SafeString:
        """The series' line and marker, small, for the legend beside its name (SVG attributes, no inline style)."""
        dash = f' stroke-dasharray="{self.dash}"' if self.dash else ""
        return mark_safe(  # safe: only the style's own values, none from the user
            f'<svg class="swatch" viewBox="0 0 28 10" aria-hidden="true" fill="{self.colour}">'
            f'<line x1="0" x2="28" y1="5" y2="5" stroke="{self.colour}" stroke-width="2.5"{dash}/>'
            f'{marker_svg(self.marker, 14, 5)}/></svg>'
        )


def chart_legend(series: Sequence[UseSeries]) -> list[LegendEntry]:
    styles = series_styles([s.spec_name for s in series])
    return [LegendEntry(s.spec_name, styles[s.spec_name].colour, styles[s.spec_name].dash,
                        styles[s.spec_name].marker) for s in series]


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
