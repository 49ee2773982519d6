"""Imports point one way: the library never imports the stages, the drivers, the dev tools or the tests;
the benchmarks never import the tests; the training path never imports the pipeline tooling (codedeps,
dvcdeps: the stage passes the code digest in)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

TRAINING = ("checkpoints.py", "pretrain.py", "train.py")
TOOLING = ("semisup.pipeline.codedeps", "semisup.pipeline.dvcdeps")


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function (`from a.b import c` -> a.b, a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _offending(files: list[Path], roots: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in files:
        bad = sorted(n for n in imported(path) if n in roots or n.startswith(tuple(f"{r}." for r in roots)))
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


def test_the_library_never_imports_stages_drivers_devtools_or_tests():
    files = sorted((ROOT / "semisup").rglob("*.py"))
    assert len(files) > 30
    assert _offending(files, ("stages", "drivers", "devtools", "tests")) == {}


def test_the_benchmarks_never_import_the_tests():
    files = sorted((ROOT / "bench").glob("*.py"))
    assert files and _offending(files, ("tests",)) == {}


def test_the_training_path_never_imports_the_pipeline_tooling():
    files = [p for p in (ROOT / "semisup").rglob("*.py") if p.name in TRAINING]
    assert sorted(p.name for p in files) == sorted(TRAINING)
    assert _offending(files, TOOLING) == {}


def test_the_scan_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\n\ndef f():\n    from tests.support import ROOT\n    from . import x\n")
    assert imported(path) == {"os", "tests.support", "tests.support.ROOT"}
