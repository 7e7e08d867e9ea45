from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pools.models import LaunchSpec
from workers import executor


class Command(BaseCommand):
    help = ("Run one reconcile pass (all enabled launch specs, or one) and print what it did or would do. "
            "It takes each spec's lease like a worker: a spec whose pass runs elsewhere is skipped (a dry run "
            "waits up to 10 s for it).")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--spec", help="only this launch spec")
        parser.add_argument("--dry-run", action="store_true", help="plan only: change nothing in AWS or Kubernetes")

    def handle(self, *args: Any, **options: Any) -> None:
        specs = LaunchSpec.objects.select_related("cluster")
        if options["spec"]:
            specs = specs.filter(name=options["spec"])
            if not specs.exists():
                raise CommandError(f"no launch spec named {options['spec']!r}", returncode=2)
        elif not options["dry_run"]:
            specs = specs.filter(enabled=True)
        failed = False
        for spec in specs:
            try:
                report = executor.reconcile_spec(spec.pk, dry_run=options["dry_run"])
            except Exception as exc:  # an endpoint that does not answer, refused credentials, a dead Redis
                if options.get("traceback"):
                    raise
                # One line with the cause, not a traceback: an unreachable AWS or Kubernetes is an expected
                # failure of this command (--traceback shows the whole story).
                self.stderr.write(f"{spec.name}: the pass failed: {_cause(exc)}")
                failed = True
                continue
            if getattr(report, "read_failed", False):
                # Nothing was planned: "nothing to do" would read as "all is well".
                for error in report.errors:
                    self.stderr.write(f"{spec.name}: could not read AWS or Kubernetes, nothing planned: {error}")
                failed = True
                continue
            for line in report.lines():
                self.stdout.write(line)
            failed = failed or bool(report.errors)
        if failed:
            raise CommandError("some steps failed; see the error lines above and the history", returncode=1)


def _cause(exc: BaseException) -> str:
    """The exception and, when it wraps one, what it wraps: 'EndpointConnectionError: Could not connect …'."""
    text = f"{type(exc).__name__}: {exc}".strip()
    inner = exc.__cause__ or exc.__context__
    if inner is not None and str(inner) and str(inner) not in text:
        text += f" ({type(inner).__name__}: {inner})"
    return text.splitlines()[0] if text else type(exc).__name__
