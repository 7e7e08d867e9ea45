from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.fixtures.world import World


def test_reconcile_dry_run_then_for_real(world: World) -> None:
    world.spec()
    world.eips(1)
    world.node("a")
    out = StringIO()
    call_command("reconcile", "--dry-run", stdout=out)
    assert "would assign" in out.getvalue() and world.all_associations() == {}
    out = StringIO()
    call_command("reconcile", "--spec", "ingress", stdout=out)
    assert "ingress: assigned" in out.getvalue() and world.eip_on("a") is not None


def test_reconcile_unknown_spec(world: World) -> None:
    with pytest.raises(CommandError, match="no launch spec named"):
        call_command("reconcile", "--spec", "nope")
