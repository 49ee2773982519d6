"""dvc.yaml's code deps are the closure of each stage's imports; checkpoint keys hold the same code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from semisup import codedeps, dvcdeps
from semisup.methods import METHODS
from tests.support import ENV, ROOT


def _project(root: Path, files: dict[str, str]) -> Path:
    """A throwaway project tree: {relative path: source}."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_dvc_yaml_lists_exactly_the_code_each_stage_runs():
    problems = dvcdeps.check(yaml.safe_load((ROOT / "dvc.yaml").read_text()), METHODS)
    assert problems == [], "\n".join(problems) + "\n(fix: python -m semisup.dvcdeps --fix)"


def test_check_names_the_stage_and_the_file():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pipeline["stages"]["embed"]["deps"].remove("semisup/encoder.py")
    pipeline["stages"]["knn"]["deps"].append("semisup/linear.py")
    pipeline["stages"]["pretrain"]["deps"].remove("semisup/methods/${item.method}.py")
    assert dvcdeps.check(pipeline, METHODS) == [
        "pretrain: dvc.yaml's deps miss semisup/methods/${item.method}.py, which the stage runs",
        "embed: dvc.yaml's deps miss semisup/encoder.py, which the stage runs",
        "knn: dvc.yaml's deps name semisup/linear.py, which the stage never runs",
    ]


def test_fix_restores_the_deps_and_keeps_the_rest_of_the_file(tmp_path):
    original = (ROOT / "dvc.yaml").read_text()
    broken = original.replace("      - semisup/encoder.py\n", "", 1).replace(
        "      - stages/knn.py\n", "      - stages/knn.py\n      - semisup/linear.py\n", 1
    )
    assert broken != original
    path = tmp_path / "dvc.yaml"
    path.write_text(broken)
    assert dvcdeps.fix(path, METHODS)
    assert path.read_text() == original  # comments, order and style as they were
    assert not dvcdeps.fix(path, METHODS)


def test_closure_counts_what_can_run_and_nothing_else(tmp_path):
    root = _project(
        tmp_path,
        {
            "semisup/__init__.py": "",
            "semisup/a.py": """
                from typing import TYPE_CHECKING
                from semisup import b
                if TYPE_CHECKING:
                    from semisup import never
                else:
                    from semisup import runs_at_run_time
                def later():
                    import semisup.sub.deep
                    from . import relative
            """,
            "semisup/b.py": "import os\nimport numpy\n",
            "semisup/never.py": "",
            "semisup/runs_at_run_time.py": "",
            "semisup/relative.py": "",
            "semisup/unused.py": "",
            "semisup/sub/__init__.py": "",
            "semisup/sub/deep.py": "",
        },
    )
    assert codedeps.closure("semisup.a", root=root) == {
        "semisup/__init__.py",
        "semisup/a.py",
        "semisup/b.py",
        "semisup/runs_at_run_time.py",
        "semisup/relative.py",
        "semisup/sub/__init__.py",
        "semisup/sub/deep.py",
    }


def test_a_method_is_the_stage_items_module_and_methods_share_only_common(tmp_path):
    files = {
        "semisup/__init__.py": "",
        "semisup/methods/__init__.py": "",
        "semisup/methods/common.py": "",
        "semisup/methods/load.py": """
            import importlib
            def load(name):
                return importlib.import_module(f"semisup.methods.{name}")
        """,
        "semisup/methods/one.py": "from semisup.methods import common\n",
        "semisup/methods/two.py": "from semisup.methods.common import x\n",
        "stages/__init__.py": "",
        "stages/train.py": "from semisup.methods.load import load\n",
    }
    root = _project(tmp_path, files)
    assert codedeps.closure("stages.train", "two", root) == {
        "semisup/__init__.py",
        "semisup/methods/__init__.py",
        "semisup/methods/load.py",
        "semisup/methods/common.py",
        "semisup/methods/two.py",
        "stages/__init__.py",
        "stages/train.py",
    }
    with pytest.raises(ValueError, match="no method was given"):
        codedeps.closure("stages.train", root=root)
    stage = {"cmd": "python -m stages.train --method ${item.method}", "matrix": {"method": ["one", "two"]}}
    assert "semisup/methods/${item.method}.py" in dvcdeps.stage_code(stage, ["one", "two"], root)
    (root / "semisup/methods/two.py").write_text("from semisup.methods import one\n")
    with pytest.raises(ValueError, match="with method two: also runs semisup/methods/one.py"):
        dvcdeps.stage_code(stage, ["one", "two"], root)


def test_the_registry_imports_no_method_module_until_one_trains():
    code = """
        import sys
        import semisup.config, semisup.train
        before = sorted(m for m in sys.modules if m.startswith("semisup.methods."))
        from semisup.methods import METHODS
        from semisup.methods.load import loss_fn
        loss_fn(METHODS["paws"])
        after = sorted(m for m in sys.modules if m.startswith("semisup.methods."))
        print(before, after)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.strip().split("] [")
    assert before == "['semisup.methods.load'"
    assert after == "'semisup.methods.common', 'semisup.methods.load', 'semisup.methods.paws']"


def test_code_digest_changes_with_one_byte_of_any_file_in_the_closure(tmp_path):
    for package in ("semisup", "stages"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    files = codedeps.closure("stages.pretrain", "paws", tmp_path)
    assert "semisup/data/readers.py" in files and "semisup/methods/crossentropy.py" not in files
    digest = codedeps.code_digest(files, tmp_path)
    assert digest == codedeps.code_digest(codedeps.closure("stages.pretrain", "paws", ROOT), ROOT)
    with (tmp_path / "semisup/data/readers.py").open("a") as f:
        f.write("#")
    assert codedeps.code_digest(files, tmp_path) != digest
