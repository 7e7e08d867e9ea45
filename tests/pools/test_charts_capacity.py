"""The demand-versus-pool chart (pools/charts_capacity.py): two step lines, each sample's values on hover."""

from __future__ import annotations

import datetime as dt

from pools import charts_capacity

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def test_each_sample_says_its_values_and_a_shortfall_on_hover() -> None:
    samples = [(T0 + dt.timedelta(hours=i), demand, 3) for i, demand in enumerate([1, 1, 4, 2])]
    svg = str(charts_capacity.demand_chart(samples, range_key="24h"))
    assert svg.startswith('<svg class="chart"') and "Demand versus pool size, last 24 h" in svg
    assert "<title>demand: 4 nodes at 14:00 UTC (pool 3, short by 1)</title>" in svg
    assert "<title>demand: 1 node at 12:00 UTC (pool 3)</title>" in svg
    assert svg.count("<title>pool: 3 EIPs at") == 4 and svg.count("<title>demand: ") == 4
    # A step line: the flat pool is one segment, not a coordinate per sample.
    pool_line = svg.split('data-series="pool size"')[1].split('points="')[1].split('"')[0]
    assert len(pool_line.split()) == 2


def test_no_samples_and_an_unknown_range() -> None:
    assert "No data in this range" in str(charts_capacity.demand_chart([]))
    assert charts_capacity.range_of("1y") == "24h" and charts_capacity.range_of("30d") == "30d"
    svg = str(charts_capacity.demand_chart([(T0, 0, 0)], range_key="30d"))
    assert "last 30 d" in svg
