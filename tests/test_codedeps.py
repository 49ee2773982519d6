"""dvc.yaml's code deps: each stage depends on the digest of the closure of its imports, which the code stage
writes; checkpoint keys hold the same digest."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from semisup.config import load_params
from semisup.pipeline import codedeps, dvcdeps
from tests.support import ENV, ROOT


def _project(root: Path, files: dict[str, str]) -> Path:
    """A throwaway project tree: {relative path: source}."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_dvc_yaml_lists_exactly_the_code_each_stage_runs():
    problems = dvcdeps.check(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    assert problems == [], "\n".join(problems) + "\n(fix: python -m semisup.pipeline.dvcdeps --fix)"


def test_every_stage_depends_on_its_digest_and_the_code_stage_writes_each_one(tmp_path):
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["code"]["deps"] == ["semisup", "stages"] and stages["code"]["outs"] == [codedeps.DIGESTS]
    names = load_params(ROOT / "params.yaml").run_methods()
    written = codedeps.digest_files(names)
    assert written == codedeps.digest_files(names)  # the same bytes while the code is the same
    for name, stage in stages.items():
        if name == "code":
            continue
        code = [d for d in stage["deps"] if dvcdeps.is_code(d)]
        assert len(code) == 1 and code[0].startswith(codedeps.DIGESTS + "/"), (name, code)
        for method in names if "${item.method}" in code[0] else [""]:
            assert code[0].replace("${item.method}", method).rpartition("/")[2] in written, (name, method)
    # A digest lists each file of the stage's closure with its sha256.
    closure = codedeps.closure("stages.knn")
    files = json.loads(written["knn.json"])["files"]
    assert list(files) == sorted(closure)
    assert (
        files["semisup/evaluation/knn.py"]
        == hashlib.sha256((ROOT / "semisup/evaluation/knn.py").read_bytes()).hexdigest()
    )
    assert json.loads(written["pretrain-paws.json"])["method"] == "paws"
    assert "semisup/methods/paws.py" in json.loads(written["pretrain-paws.json"])["files"]
    assert "semisup/methods/suncet.py" not in json.loads(written["pretrain-paws.json"])["files"]


def test_check_names_the_stage_and_the_file():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pipeline["stages"]["embed"]["deps"].remove("data/code/embed.json")
    pipeline["stages"]["knn"]["deps"].append("semisup/evaluation/linear.py")
    pipeline["stages"]["pretrain"]["deps"].remove("data/code/pretrain-${item.method}.json")
    pipeline["stages"]["pretrain"]["deps"].append("data/code/pretrain.json")
    pipeline["stages"]["code"]["deps"].remove("stages")
    assert dvcdeps.check(pipeline) == [
        "code: dvc.yaml's deps miss stages, which holds code the stages run",
        "pretrain: dvc.yaml's deps miss data/code/pretrain-${item.method}.json, the digest of the code the "
        "stage runs",
        "pretrain: dvc.yaml's deps name data/code/pretrain.json: its code deps are its digest file alone "
        "(data/code/pretrain-${item.method}.json)",
        "embed: dvc.yaml's deps miss data/code/embed.json, the digest of the code the stage runs",
        "knn: dvc.yaml's deps name semisup/evaluation/linear.py: its code deps are its digest file alone "
        "(data/code/knn.json)",
    ]
    del pipeline["stages"]["code"]
    assert dvcdeps.check(pipeline)[0] == (
        "dvc.yaml: no stage runs stages.code, which writes the digests in data/code"
    )


def test_fix_restores_the_deps_and_keeps_the_rest_of_the_file(tmp_path):
    original = (ROOT / "dvc.yaml").read_text()
    broken = original.replace("      - data/code/embed.json\n", "", 1).replace(
        "      - data/code/knn.json\n",
        "      - data/code/knn.json\n      - semisup/evaluation/linear.py\n",
        1,
    )
    assert broken != original
    path = tmp_path / "dvc.yaml"
    path.write_text(broken)
    assert dvcdeps.fix(path)
    assert path.read_text() == original  # comments, order and style as they were
    assert not dvcdeps.fix(path)


def test_the_command_prints_the_problems_and_exits_1_then_fixes_them(tmp_path):
    path = tmp_path / "dvc.yaml"
    path.write_text((ROOT / "dvc.yaml").read_text().replace("      - data/code/embed.json\n", "", 1))
    command = [sys.executable, "-m", "semisup.pipeline.dvcdeps", str(path)]
    proc = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1,
        "embed: dvc.yaml's deps miss data/code/embed.json, the digest of the code the stage runs\n",
        "",
    )
    proc = subprocess.run([*command, "--fix"], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, f"{path}: code deps rewritten\n")
    proc = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (
        0,
        f"{path}: every stage depends on the digest of the code it runs\n",
    )


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


def test_a_method_is_the_stage_items_module_and_its_digest_holds_the_methods_it_imports(tmp_path):
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
        "stages/train.py": 'from semisup.methods.load import load\nif __name__ == "__main__":\n    load("one")\n',
        "stages/other.py": 'import semisup\nif __name__ == "__main__":\n    pass\n',
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
    assert dvcdeps.stage_code(stage, root) == ["data/code/train-${item.method}.json"]
    assert dvcdeps.stage_code({"cmd": "python -m stages.other"}, root) == ["data/code/other.json"]
    with pytest.raises(ValueError, match="needs a matrix axis `method`"):
        dvcdeps.stage_code({"cmd": "python -m stages.train"}, root)
    # A configuration (`three`) runs its method's code: its digest is the method's, naming the method.
    names = {"one": "one", "two": "two", "three": "two"}
    before = codedeps.digest_files(names, root)
    assert set(before) == {"other.json", "train-one.json", "train-two.json", "train-three.json"}
    assert before["train-three.json"] == before["train-two.json"]
    # A change to one method's module changes its digests only; once `two` imports `one`, both.
    (root / "semisup/methods/one.py").write_text("from semisup.methods import common\n# a change\n")
    after = codedeps.digest_files(names, root)
    assert {n for n in after if after[n] != before[n]} == {"train-one.json"}
    (root / "semisup/methods/two.py").write_text("from semisup.methods import one\n")
    again = codedeps.digest_files(names, root)
    assert {n for n in again if again[n] != after[n]} == {"train-two.json", "train-three.json"}


def test_the_registry_imports_no_method_module_until_one_trains():
    code = """
        import sys
        import semisup.config, semisup.training.train
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


def test_a_checkpoint_key_holds_the_hash_of_the_pretrain_stages_digest_file():
    from semisup.pipeline.codedeps import pretrain_code

    written = codedeps.digest_files({"paws": "paws", "paws_other": "paws"})
    for name in ("paws", "paws_other"):
        assert pretrain_code("paws") == hashlib.sha256(written[f"pretrain-{name}.json"].encode()).hexdigest()


def test_pretrain_refuses_a_digest_that_is_not_its_code(tmp_path):
    from semisup.core.errors import UserError
    from stages.pretrain import check_code_digest

    written = codedeps.digest_files({"paws": "paws", "paws_other": "suncet"})
    for name, text in written.items():
        (tmp_path / name).write_text(text)
    check_code_digest(str(tmp_path / "pretrain-paws.json"), "paws")
    check_code_digest(str(tmp_path / "pretrain-paws_other.json"), "suncet")
    with pytest.raises(
        UserError, match=r"pretrain-paws.json: not the digest of the code this run runs \(method suncet\)"
    ):
        check_code_digest(str(tmp_path / "pretrain-paws.json"), "suncet")
    stale = json.loads(written["pretrain-paws.json"])
    stale["files"]["semisup/methods/paws.py"] = "0" * 64
    (tmp_path / "stale.json").write_text(json.dumps(stale, indent=1) + "\n")
    with pytest.raises(UserError, match="run `dvc repro -f code`"):
        check_code_digest(str(tmp_path / "stale.json"), "paws")
    with pytest.raises(UserError, match="cannot read it"):
        check_code_digest(str(tmp_path / "missing.json"), "paws")
