"""`manage.py capacity [--spec NAME] [--format table|json]`: each launch spec's pool against its peaks, the region's
EIP quota, the cost and where its nodes' traffic leaves (pools/selectors_capacity.py says what each figure means).

The table is for people: one row per spec, the 30-day peak against the pool in words last. The JSON is for
scripts: a list of {"launchSpec": name, ...} objects with the API's keys (even for one --spec).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pools.selectors import launch_spec_get, launch_spec_list
from pools.selectors_capacity import CapacityReport, capacity_report_list

# IDLE-USD: what the pool's billable EIPs cost over the last 30 days while free. EGRESS: the live nodes whose
# traffic leaves through an internet gateway / a NAT / nowhere, of all the live nodes (unknown subnets: only there).
COLUMNS = ("SPEC", "POOL", "IN-USE", "FREE", "MIN-FREE", "PEAK-7D", "PEAK-30D", "SHORT", "QUOTA(USED/MAX)",
           "USD/MONTH", "IDLE-USD", "BYOIP", "EGRESS(IGW/NAT/NONE)", "NOTES")


class Command(BaseCommand):
    help = "Show each launch spec's capacity: pool, peaks, shortfall, EIP quota, cost and egress."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--spec", default=None, metavar="NAME", help="only this launch spec (default: every one)")
        parser.add_argument("--format", choices=("table", "json"), default="table",
                            help="table for people (default), json for scripts")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["spec"]
        if name is not None:
            spec = launch_spec_get(name=name)
            if spec is None:
                raise CommandError(f"no launch spec named {name!r} (manage.py launchspec list shows them)",
                                   returncode=2)
            specs = [spec]
        else:
            specs = launch_spec_list()
        reports = capacity_report_list(specs=specs)
        if options["format"] == "json":
            self.stdout.write(json.dumps([{"launchSpec": r.spec, **r.as_api()} for r in reports], indent=2))
            return
        if not reports:
            self.stdout.write("no launch specs")
            return
        self.stdout.write(table([COLUMNS, *(row(report) for report in reports)]))


def row(report: CapacityReport) -> tuple[str, ...]:
    limit = "?" if report.quota_limit is None else str(report.quota_limit)
    notes = report.shortfall_text()
    if report.quota_limit is None:
        notes += f"; quota unknown: {report.quota_error}"
    return (report.spec, str(report.pool), str(report.in_use), str(report.free), str(report.min_free),
            str(report.peak7d.count), str(report.peak30d.count), str(report.shortfall),
            f"{report.quota_allocated}/{limit}", f"{report.month_usd:.2f}", f"{report.idle_month_usd:.2f}",
            str(report.byoip), f"{report.via_igw}/{report.via_nat}/{report.no_route} of {report.egress_nodes}", notes)


def table(rows: list[tuple[str, ...]]) -> str:
    """Columns aligned with two spaces between them; the last one (free text) is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
                     for r in rows)
