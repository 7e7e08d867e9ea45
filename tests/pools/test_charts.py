"""pools/charts.py: pool-use series told apart by more than colour, and the range drawn whole."""

from __future__ import annotations

import datetime as dt
import itertools

from pools import charts
from pools.selectors import UseSeries


def _lab(colour: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB colour."""
    linear = []
    for i in (1, 3, 5):
        c = int(colour[i:i + 2], 16) / 255
        linear.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = linear
    xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, (
        0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    f = [v ** (1 / 3) if v > 0.008856 else 7.787 * v + 16 / 116 for v in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def test_palette_colours_are_far_apart() -> None:
    """#1B7F95 and #0072B2 were 27.5 apart (CIE76): read as one blue. Every pair is at least 35 apart now."""
    assert min(sum((p - q) ** 2 for p, q in zip(_lab(a), _lab(b), strict=True)) ** .5
               for a, b in itertools.combinations(charts.PALETTE, 2)) >= 35


def test_series_styles_never_share_a_slot_and_differ_by_more_than_colour() -> None:
    names = [f"spec-{i}" for i in range(2 * len(charts.PALETTE))]
    styles = charts.series_styles(names)
    assert len({(s.dash, s.marker) for s in styles.values()}) == len(names)
    assert len({(s.colour, s.dash) for s in styles.values()}) == len(names)
    # Up to six specs, each its own colour too.
    assert len({s.colour for s in charts.series_styles(names[:len(charts.PALETTE)]).values()}) == len(charts.PALETTE)
    # A spec's style comes from its name: the same in any order, and its own while no other wants its slot.
    assert charts.series_styles(list(reversed(names))) == styles
    assert charts.series_styles(["egress-web"])["egress-web"].colour == charts.spec_colour("egress-web")


def test_the_use_chart_spans_its_range_and_says_when_its_data_starts() -> None:
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    points = [(now - dt.timedelta(minutes=60 - 2 * i), 1 if i > 25 else 0) for i in range(31)]
    svg = str(charts.pool_use_chart([UseSeries("web", 2, points)], range_key="1h",
                                    data_start=now - dt.timedelta(minutes=9, seconds=30)))
    assert ">−60 min</text>" in svg and ">now</text>" in svg
    assert "no data before 11:50 UTC" in svg and 'class="no-data"' in svg
    # A marker per sample from the data's start on, each with its value; the quiet ones show under the pointer.
    assert svg.count("<title>web: ") == 1 + 5 + 1  # the line, its samples since 11:50:30, the pool ceiling
    assert "<title>web: 1 in use at 12:00 UTC (pool 2)</title>" in svg
