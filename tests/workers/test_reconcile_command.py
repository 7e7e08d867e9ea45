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


def test_reconcile_dry_run_with_nothing_to_do_says_so_plainly(world: World) -> None:
    world.spec()
    out = StringIO()
    call_command("reconcile", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == ["ingress: nothing to do"]


def test_reconcile_with_aws_unreachable_prints_one_line_and_fails(world: World,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world.spec()
    world.eips(1)
    world.node("a")
    # Nothing listens on port 1: every EC2 call fails to connect.
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:1")
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("reconcile", "--dry-run", stdout=out, stderr=err)
    assert failure.value.returncode == 1
    assert "nothing to do" not in out.getvalue()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingress: could not read AWS or Kubernetes, nothing planned:")
    assert "Traceback" not in err.getvalue()
    assert world.all_associations() == {}
