from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pools import services
from pools.management.cli import cli_actor
from pools.models import LaunchSpec
from pools.pool_rule import labels_text
from pools.specfile import SpecFileError, load_spec_json, parse_launch_spec


class Command(BaseCommand):
    help = "Create or update launch specs from Spot Ocean launch-spec JSON; list or delete them."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        apply = sub.add_parser("apply", help="create or update launch specs by name, from a file or a folder")
        apply.add_argument(
            "-f", "--file", required=True,
            help="Ocean launch-spec JSON file, a folder (every *.json file in it, in one transaction), or - for stdin",
        )
        apply.add_argument("--prune", action="store_true",
                           help="disable the specs the input does not name; delete those that hold no EIP")
        apply.add_argument("--cluster", default=None, metavar="NAME",
                           help="prune only this cluster's specs (default: the clusters the documents name)")
        apply.add_argument("--diff", action="store_true",
                           help="print what would change and change nothing; exit 1 if something would, else 0")
        sub.add_parser("list", help="list launch specs")
        delete = sub.add_parser("delete", help="delete a launch spec that holds no EIP")
        delete.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "apply":
            if options["cluster"] is not None and not options["prune"]:
                raise CommandError("--cluster sets the scope of --prune: give --prune too", returncode=2)
            if options["prune"] or options["diff"] or Path(options["file"]).is_dir():
                self.sync(options["file"], prune=options["prune"], dry_run=options["diff"], cluster=options["cluster"])
            else:
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
                services.launch_spec_delete(name=options["name"], actor=cli_actor())
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
            spec, created = services.launch_spec_apply(data=parse_launch_spec(data), actor=cli_actor())
        except SpecFileError as exc:
            lines = "\n".join(f"  - {m}" for m in exc.messages)
            raise CommandError(f"{path}: refused, nothing changed:\n{lines}", returncode=2) from None
        verb = "created" if created else "updated"
        self.stdout.write(f"{verb} launch spec {spec.name} (cluster {spec.cluster.name}, {spec.cluster.region}, "
                          f"pool {spec.selector_text()})")

    def sync(self, path: str, *, prune: bool, dry_run: bool, cluster: str | None = None) -> None:
        """A folder (or one file) as the whole desired state: all or nothing, in one transaction."""
        problems: list[str] = []
        documents: list[tuple[str, object]] = []
        for source, raw in self.read_documents(path):
            if isinstance(raw, str):
                problems.append(f"{source}: {raw}")
                continue
            try:
                documents.append((source, load_spec_json(raw)))
            except SpecFileError as exc:
                problems.extend(f"{source}: {message}" for message in exc.messages)
        # With a file already refused, still check the others (without writing) so that every problem shows.
        if documents or not problems:
            result = services.launch_spec_sync(documents=documents, prune=prune, dry_run=dry_run or bool(problems),
                                               actor=cli_actor(), cluster=cluster)
            problems.extend(result.problems)
        if problems:
            lines = "\n".join(f"  - {m}" for m in problems)
            raise CommandError(f"{path}: refused, nothing changed:\n{lines}", returncode=2)
        if prune:
            scope = ", ".join(result.prune_clusters)
            how = "as asked" if cluster is not None else "the clusters the input names"
            self.stdout.write(f"prune scope: cluster {scope} ({how}); other clusters' specs are left alone")
        for line in result.diff:
            self.stdout.write(line)
        for name in result.draining:
            self.stdout.write(f"  spec {name}: absent, disabled and still draining; a later --prune deletes it "
                              "once it holds nothing")
        if not result.diff:
            self.stdout.write("no changes")
        if dry_run:
            if result.changed:
                # Exit 1 for CI: the record differs from the folder.
                raise CommandError("launch specs differ from the input (nothing changed)", returncode=1)
            return
        self.stdout.write(f"{len(result.created)} created, {len(result.updated)} updated, "
                          f"{len(result.unchanged)} unchanged, {len(result.disabled)} disabled, "
                          f"{len(result.deleted)} deleted")

    def read_documents(self, path: str) -> list[tuple[str, bytes | str]]:
        """(source, bytes) per input file, or (source, why it cannot be read)."""
        if path == "-":
            return [("-", self.stdin_bytes())]
        folder = Path(path)
        if not folder.is_dir():
            try:
                return [(path, folder.read_bytes())]
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror}", returncode=2) from None
        files = sorted(p for p in folder.glob("*.json") if p.is_file())
        if not files:
            # An empty folder with --prune would delete every spec: never what a pipeline meant.
            raise CommandError(f"{path}: no *.json file in the folder; nothing changed", returncode=2)
        found: list[tuple[str, bytes | str]] = []
        for file in files:
            try:
                found.append((file.name, file.read_bytes()))
            except OSError as exc:
                found.append((file.name, f"cannot read: {exc.strerror}"))
        return found

    def stdin_bytes(self) -> bytes:
        import sys

        # Bytes, not text: invalid UTF-8 gets the same one-line refusal as a file.
        return sys.stdin.buffer.read()
