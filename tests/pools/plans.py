"""The plan a pass stores for the spec page (services.spec_plan_store), for tests whose world is only rows.

A pass plans on the snapshot it has just written and stores that plan (workers/executor.py run_pass); the spec
page and the API read it (selectors.plan_preview) and never plan. A test that builds the snapshot rows by hand
stores the plan the same way, on the same planner inputs, where the workers' pass would have.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from pools import services
from pools.models import LaunchSpec
from pools.planner import Plan, plan
from pools.snapshot import planner_inputs


def store_plan_as_a_pass(spec: LaunchSpec, *, fence: int = 0, planned_at: dt.datetime | None = None) -> Plan:
    """Plan the spec on the snapshot as it is (the rows), store it as its pass does, and return that plan."""
    spec = LaunchSpec.objects.select_related("cluster").get(pk=spec.pk)  # as a pass reads it: edits included
    inputs = planner_inputs(spec)
    planned = plan(*inputs)
    _view, eips, nodes, claims = inputs
    with transaction.atomic():
        services.spec_plan_store(spec=spec, plan=planned, eips=eips, nodes=nodes, claims=claims, fence=fence,
                                 planned_at=planned_at)
    return planned
