"""`manage.py capacity`: a table for people, JSON for scripts, a clear refusal of an unknown spec."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from pools.models import LaunchSpec, RegionFacts
from tests.fixtures.web import WebWorld

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("capacity", *args, stdout=out)
    return out.getvalue()


def test_the_table_has_a_row_per_spec_with_the_shortfall_and_the_unknown_quota(web_world: WebWorld) -> None:
    LaunchSpec.objects.create(name="ingress", cluster=web_world.cluster, tag_key="eipdash/pool", tag_value="ingress")
    RegionFacts.objects.create(region="us-east-1", quota_error="AccessDenied")
    lines = run().splitlines()
    assert lines[0].split()[:4] == ["SPEC", "POOL", "IN-USE", "FREE"]
    egress, ingress = lines[1], lines[2]
    # egress: a pool of 2, one in use; two nodes wait or hold now: the 30-day peak is 2.
    assert egress.split()[:8] == ["egress", "2", "1", "1", "0", "2", "2", "0"]
    assert "the 30-day peak needed 2; the pool has 2: 0 to spare" in egress
    assert "2/?" in egress and "quota unknown: AccessDenied" in egress
    assert ingress.startswith("ingress ") and "no node needed an EIP in the last 30 days; the pool has 0" in ingress


def test_json_lists_the_api_form_per_spec(web_world: WebWorld) -> None:
    RegionFacts.objects.create(region="us-east-1", eip_quota=5, eip_quota_source="service-quotas")
    (row,) = json.loads(run("--format", "json", "--spec", "egress"))
    assert row["launchSpec"] == "egress"
    assert (row["pool"], row["inUse"], row["free"], row["peak30d"]) == (2, 1, 1, 2)
    assert row["quota"] == {"limit": 5, "allocated": 2, "available": 3}
    assert [r["launchSpec"] for r in json.loads(run("--format", "json"))] == ["egress"]


def test_an_unknown_spec_is_refused(web_world: WebWorld) -> None:
    with pytest.raises(CommandError) as info:
        run("--spec", "nope")
    assert info.value.returncode == 2
    assert "no launch spec named 'nope'" in str(info.value)
