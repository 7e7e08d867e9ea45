from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pools import services
from pools.models import LaunchSpec
from pools.pool_rule import labels_text
from pools.specfile import SpecFileError, load_spec_json, parse_launch_spec


class Command(BaseCommand):
    help = "Create or update launch specs from Spot Ocean launch-spec JSON; list or delete them."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        apply = sub.add_parser("apply", help="create or update a launch spec by name")
        apply.add_argument("-f", "--file", required=True, help="Ocean launch-spec JSON file, or - for stdin")
        sub.add_parser("list", help="list launch specs")
        delete = sub.add_parser("delete", help="delete a launch spec that holds no EIP")
        delete.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "apply":
            self.apply(options["file"])
        elif action == "list":
            # A header row, tab-separated like the rows: `column -t -s $'\t'` aligns it, `tail -n +2` drops it.
            self.stdout.write("NAME\tCLUSTER\tREGION\tLABELS\tSELECTOR\tSTATE")
            for spec in LaunchSpec.objects.select_related("cluster"):
                labels = labels_text(spec.labels)
                state = "enabled" if spec.enabled else "disabled"
                self.stdout.write(f"{spec.name}\t{spec.cluster.name}\t{spec.cluster.region}\t{labels}\t"
                                  f"{spec.selector_text()}\t{state}")
        else:
            try:
                services.launch_spec_delete(name=options["name"])
            except LaunchSpec.DoesNotExist as exc:
                raise CommandError(str(exc), returncode=2) from None
            except SpecFileError as exc:
                raise CommandError(str(exc), returncode=2) from None
            self.stdout.write(f"deleted {options['name']}")

    def apply(self, path: str) -> None:
        try:
            raw = self.stdin_bytes() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}", returncode=2) from None
        try:
            data = load_spec_json(raw)
        except SpecFileError as exc:
            # One line, exit 2: bad input is the user's to fix, never a traceback.
            raise CommandError(f"{path}: {exc}", returncode=2) from None
        try:
            spec, created = services.launch_spec_apply(data=parse_launch_spec(data))
        except SpecFileError as exc:
            lines = "\n".join(f"  - {m}" for m in exc.messages)
            raise CommandError(f"{path}: refused, nothing changed:\n{lines}", returncode=2) from None
        verb = "created" if created else "updated"
        self.stdout.write(f"{verb} launch spec {spec.name} (cluster {spec.cluster.name}, {spec.cluster.region}, "
                          f"pool {spec.selector_text()})")

    def stdin_bytes(self) -> bytes:
        import sys

        # Bytes, not text: invalid UTF-8 gets the same one-line refusal as a file.
        return sys.stdin.buffer.read()
