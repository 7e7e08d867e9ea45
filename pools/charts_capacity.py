"""The spec page's demand-versus-pool chart, drawn with pools/charts.py's pieces (its frame, grid, axes and
markers): server-side SVG, no JavaScript, each sample's values on hover (<title>)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString

from .charts import (
    DASHES,
    PALETTE,
    LegendEntry,
    _axis_grid,
    _axis_titles,
    _Frame,
    _marker_tag,
    _moment_text,
    _nice_max,
    _svg,
    marker_svg,
)

# The spec page's ranges: key -> (hours, label). Capacity is planned over days and weeks, not the last hour.
RANGES: dict[str, tuple[int, str]] = {
    "24h": (24, "24 h"),
    "7d": (168, "7 d"),
    "30d": (720, "30 d"),
}
DEFAULT_RANGE = "24h"

Sample = tuple[dt.datetime, int, int]  # (time, nodes demanding an EIP, pool size)
# A marker's hover text from its value, its time and the other line's value at that time (None: not given).
TitleOf = Callable[[int, str, "int | None"], str]

# Two lines told apart by colour, pattern and marker (never by colour alone): demand solid with circles, the
# pool dashed with squares.
DEMAND = LegendEntry("demand (nodes that need an EIP)", PALETTE[1], "", "circle")
POOL = LegendEntry("pool size", PALETTE[0], DASHES[1], "square")
LEGEND = (DEMAND, POOL)


def range_of(key: str) -> str:
    """The asked range if it is one of RANGES, else the default."""
    return key if key in RANGES else DEFAULT_RANGE


def demand_chart(samples: Sequence[Sample], *, range_key: str = DEFAULT_RANGE) -> SafeString:
    hours, label = RANGES[range_of(range_key)]
    title = f"Demand versus pool size, last {label}"
    if not samples:
        return _svg('<text x="20" y="100" class="chart-empty">No data in this range</text>', title=title)
    top = max([max(demand, pool) for _t, demand, pool in samples] + [1])
    frame = _Frame(start=samples[0][0], end=samples[-1][0], y_max=_nice_max(top), hours=hours)
    parts = _axis_grid(frame)
    parts.append(_axis_titles("time (UTC), now at the right", "EIPs"))
    parts += _line(frame, POOL, [(t, pool) for t, _demand, pool in samples],
                   lambda value, moment, _other: f"pool: {value} EIPs at {moment} UTC")
    parts += _line(frame, DEMAND, [(t, demand) for t, demand, _pool in samples],
                   _demand_title, others=[pool for _t, _demand, pool in samples])
    return _svg("".join(parts), title=title)


def _demand_title(value: int, moment: str, pool: int | None) -> str:
    short = f", short by {value - pool}" if pool is not None and value > pool else ""
    nodes = "1 node" if value == 1 else f"{value} nodes"
    return f"demand: {nodes} at {moment} UTC (pool {pool}{short})"


def _line(frame: _Frame, style: LegendEntry, points: list[tuple[dt.datetime, int]], title: TitleOf,
          others: list[int] | None = None) -> list[str]:
    """A step line (a count holds until the next sample) and a marker per sample that says its value on hover;
    markers where the line starts, steps and ends are shown, the others appear under the pointer only."""
    # Corners only: a run of equal samples is one segment (a flat month is not 120 coordinates).
    coords = [f"{frame.x(points[0][0]):.1f},{frame.y(points[0][1]):.1f}"]
    for (moment, value), (_before, previous) in zip(points[1:], points, strict=False):
        if value != previous:
            coords.append(f"{frame.x(moment):.1f},{frame.y(previous):.1f}")
            coords.append(f"{frame.x(moment):.1f},{frame.y(value):.1f}")
    if len(points) > 1:
        coords.append(f"{frame.x(points[-1][0]):.1f},{frame.y(points[-1][1]):.1f}")
    dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
    name = escape(style.name)
    parts = [f'<g class="series" data-series="{name}" fill="{style.colour}">'
             f'<polyline fill="none" stroke="{style.colour}" stroke-width="2.5"{dash} points="{" ".join(coords)}">'
             f"<title>{name}: {points[-1][1]} now</title></polyline>"]
    tag = _marker_tag(style.marker)
    for index, (moment, value) in enumerate(points):
        shown = index in (0, len(points) - 1) or value != points[index - 1][1]
        text = title(value, _moment_text(moment, frame.hours), others[index] if others is not None else None)
        parts.append(f'{marker_svg(style.marker, frame.x(moment), frame.y(value))} '
                     f'class="point{"" if shown else " quiet"}"><title>{escape(text)}</title></{tag}>')
    parts.append("</g>")
    return parts
