"""The package layering, read from the source: pools/ (the record, the planner, the web) never imports the
workers (the only code with AWS and Kubernetes rights) nor the sandbox (absent from the production image)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    return {path: sorted(n for n in names if n.split(".")[0] in forbidden)
            for path, names in imported_modules(package).items()
            if any(n.split(".")[0] in forbidden for n in names)}


def test_pools_imports_neither_the_workers_nor_the_sandbox() -> None:
    assert offenders("pools", ("workers", "sandbox", "importlib", "boto3", "botocore", "kubernetes")) == {}


def test_the_product_never_imports_the_sandbox() -> None:
    for package in ("workers", "eipdash"):
        assert offenders(package, ("sandbox",)) == {}


def test_the_adapters_are_the_only_importers_of_their_sdks() -> None:
    for sdk, home in (("boto3", "workers/ec2.py"), ("botocore", "workers/ec2.py"), ("kubernetes", "workers/kube.py")):
        importers = {path for path, names in imported_modules("workers").items()
                     if any(n.split(".")[0] == sdk for n in names)}
        assert importers <= {home}, sdk


# Decisions are named rules: a function past this many paths is several rules that should say their names.
MAX_COMPLEXITY = 25


def test_no_function_of_the_product_hides_more_than_25_paths() -> None:
    from radon.complexity import cc_visit

    heavy = []
    for package in ("pools", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for block in cc_visit(path.read_text()):
                if block.complexity > MAX_COMPLEXITY:
                    heavy.append(f"{path.relative_to(ROOT)}:{block.lineno} {block.name} ({block.complexity})")
    assert heavy == []


def test_a_django_process_imports_neither_sdk_until_it_uses_one() -> None:
    """Every process the product starts (web, beat, migrate, each CLI command) sets Django up; the SDKs cost
    a fifth of a second each to import, and only the passes need them."""
    import subprocess
    import sys

    probe = ("import django, sys; django.setup(); "
             "print(sorted(m for m in ('kubernetes', 'boto3', 'botocore') if m in sys.modules))")
    env = {"DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
