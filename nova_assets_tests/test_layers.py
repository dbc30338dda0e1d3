"""Imports run down the layers only: settings/errors → core → resources → defs → definitions, with
serving, generate and stack above the resources (never below them, never on defs), and the CLI,
`nova dev` and the benchmarks on top. The core and the layers beside it know nothing of Dagster.

Read from the source (AST), so a lazy import inside a function counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
BASE = {"settings", "errors", "topics"}
# what each part of the package may import from the package (besides itself)
ALLOWED: dict[str, set[str]] = {
    "settings": {"errors"},
    "errors": set(),
    "topics": set(),
    "core": BASE,
    "resources": BASE | {"core"},
    "serving": BASE | {"core", "resources"},
    "generate": BASE | {"core", "resources"},
    "stack": BASE | {"core", "resources"},
    "defs": BASE | {"core", "resources"},
    "definitions": BASE | {"core", "resources", "defs"},
    "dev": BASE | {"core", "resources", "defs", "definitions", "stack", "generate", "serving"},
    "cli": BASE | {"core", "resources", "defs", "definitions", "stack", "generate", "serving", "dev"},
}
DAGSTER_FREE = ("core", "serving", "generate", "stack", "settings", "errors", "topics")


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "nova_assets":
                found += [(f"nova_assets.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def _package_modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted((ROOT / "nova_assets").rglob("*.py")):
        out.append((".".join(path.relative_to(ROOT).with_suffix("").parts), path))
    return out


def test_imports_only_run_down_the_layers() -> None:
    upward = []
    for module, path in _package_modules():
        mine = _part(module)
        if not mine or mine == "__init__":
            continue
        assert mine in ALLOWED, f"{module}: part {mine!r} has no place in the layers (add it to ALLOWED)"
        for target, line in _imports(path):
            if not target.startswith("nova_assets."):
                continue
            theirs = _part(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({mine} -> {theirs})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_core_and_its_neighbours_know_nothing_of_dagster() -> None:
    found = []
    for module, path in _package_modules():
        if _part(module) in DAGSTER_FREE:
            found += [f"{path.relative_to(ROOT)}:{line}" for t, line in _imports(path) if t.split(".")[0] == "dagster"]
    assert not found, "Dagster imported outside defs/definitions/dev/cli:\n" + "\n".join(found)


def test_defs_hold_only_definitions_that_call_the_core() -> None:
    """Every module under defs/ imports Dagster (a module that does not belongs in core/)."""
    plain = [
        str(path.relative_to(ROOT))
        for module, path in _package_modules()
        if _part(module) == "defs"
        and path.name != "__init__.py"
        and not any(t.split(".")[0] == "dagster" for t, _ in _imports(path))
    ]
    assert not plain, f"modules under defs/ without a Dagster definition (move them to core/): {plain}"


def test_benchmarks_do_not_reach_into_the_cli() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "bench").glob("*.py"))
        for target, line in _imports(path)
        if target.startswith("nova_assets.cli")
    ]
    assert not found, found


def test_no_module_is_over_400_lines() -> None:
    """A module past 400 lines has a seam inside it: split it there."""
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in [*sorted((ROOT / "nova_assets").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]
        if (n := len(path.read_text().splitlines())) > 400
    ]
    assert not long, long
