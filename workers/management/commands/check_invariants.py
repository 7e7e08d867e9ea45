"""`manage.py check_invariants`: compare AWS, Kubernetes and the record against the invariants I1–I4."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workers.ec2 import Ec2Error
from workers.invariants import Checker, Violation, unique
from workers.kube import KubeError


class Command(BaseCommand):
    help = ("Check AWS, Kubernetes and the record against I1–I4; print every violation, one a line, and exit 1 "
            "if there is any.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--grace", type=float, default=None,
            help="seconds an I4 finding (the record behind AWS) must persist before it counts, as the next "
                 "pass repairs it (default: two reconcile periods, at least 10); 0 still reads twice",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        grace = options["grace"]
        if grace is None:
            grace = max(2.0 * settings.EIPDASH_RECONCILE_SECONDS, 10.0)
        checker = Checker(grace_seconds=grace)
        found: list[Violation] = []
        try:
            found += checker.sample()
            deadline = time.monotonic() + grace
            # An I4 finding is a violation only if the next reading, one grace period later, still has it.
            if checker.pending():
                time.sleep(max(0.0, deadline - time.monotonic()))
                found += checker.sample()
        except (Ec2Error, KubeError) as exc:
            raise CommandError(f"could not read the world: {type(exc).__name__}: {exc}", returncode=2) from exc
        violations = unique(found)
        observation = checker.last
        for violation in violations:
            self.stdout.write(violation.line())
        if violations:
            raise CommandError(f"{len(violations)} violation(s)", returncode=1)
        seen = f" ({observation.nodes} nodes, {observation.addresses} pool EIPs)" if observation else ""
        self.stdout.write(f"no violations{seen}")
