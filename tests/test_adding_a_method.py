"""A method is a module, a registry entry and a params section: a throwaway one runs through the real
pipeline, and a code change reruns exactly the stages whose code it is (a git + DVC repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from semisup import dvcdeps
from semisup.methods import METHODS
from tests.support import TINY_PARAMS, copy_project, params_with, run

# InfoNCE under another name: what a user writes to add a method (README, "Adding a method").
TWIN_MODULE = '''"""Twin: InfoNCE under another name, a throwaway method of the test suite."""

from semisup.methods.common import contrastive_loss, top1_accuracy


def compute(inputs, params):
    value, logits, labels = contrastive_loss(*inputs.views, params.temperature)
    return value, {"contrastive_acc": top1_accuracy(logits, labels)}
'''
TWIN_ENTRY = '''

@dataclass(frozen=True)
class TwinParams:
    """InfoNCE's params, for the twin."""

    unlabeled_batch: int = param(128, ge=2)
    labeled_batch: int = param(16, ge=1)
    temperature: float = param(0.1, gt=0.0)


METHODS["twin"] = Method("twin", unlabeled_views=2, uses_labeled=False, has_head=False, params=TwinParams)
'''
# The tests' tiny profile (one epoch, a tiny encoder) with the two methods and a 250-image bank's k.
TINY = TINY_PARAMS | {"method_names": "[paws,twin]", "knn.k": "[20]"}


def _status(repo: Path) -> set[str]:
    """The stages `dvc status` names (those whose own deps, params or outputs changed)."""
    return set(json.loads(run(repo, "dvc", "status", "--json").stdout or "{}"))


def _append(repo: Path, rel: str) -> None:
    with (repo / rel).open("a") as f:
        f.write("# a change\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC copy of the project with a fifth method added the README's way, reproduced once."""
    repo = copy_project(tmp_path_factory.mktemp("repo"))
    (repo / "semisup/methods/twin.py").write_text(TWIN_MODULE)
    with (repo / "semisup/methods/__init__.py").open("a") as f:
        f.write(TWIN_ENTRY)
    params = params_with(TINY)
    params["methods"]["twin"] = {"unlabeled_batch": 128, "labeled_batch": 16, "temperature": 0.1}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "a fifth method"]):
        run(repo, *cmd)
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "results")
    return repo


@pytest.mark.slow
def test_a_new_method_needs_only_its_module_registry_entry_and_params(repo):
    # dvc.yaml, the stages and every other file are as they were: the new method ran through all stages.
    knn = json.loads((repo / "metrics/runs/twin-all-0/knn.json").read_text())
    assert 0.0 <= knn["k20"]["accuracy"] <= 1.0
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["methods"] == ["paws", "twin"]
    assert run(repo, "python", "-m", "semisup.dvcdeps").returncode == 0
    dry = run(repo, "python", "-m", "drivers.demo", "--dry-run").stdout
    # The demo profile scales its reference batch (128 of 250 images) and keeps the labeled one it never encodes.
    assert "-Smethods.twin.unlabeled_batch=66" in dry and "-Smethods.twin.labeled_batch=16" in dry
    assert "twin" not in METHODS  # the test's copy only


@pytest.mark.slow
def test_results_record_the_library_versions_that_computed_them(repo):
    from semisup.versions import library_versions

    mine = library_versions()
    assert set(mine) == {"python", "tensorflow", "keras", "numpy", "scikit-learn", "dvc"}
    for rel in ("metrics/runs/paws-all-0/knn.json", "metrics/runs/paws-all-0/linear.json"):
        assert json.loads((repo / rel).read_text())["versions"] == mine
    assert json.loads((repo / "metrics/runs/twin-all-0/train/versions.json").read_text()) == mine
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["versions"] == {name: [version] for name, version in mine.items()}
    assert f"tensorflow {mine['tensorflow']}" in (repo / "metrics/report.md").read_text()


@pytest.mark.slow
def test_a_code_change_reruns_exactly_the_stages_that_run_that_code(repo):
    assert _status(repo) == set()
    assert "Stage 'pretrain@paws-all-0' didn't change, skipping" in run(repo, "dvc", "repro").stdout

    _append(repo, "semisup/data/readers.py")
    changed = _status(repo)
    runs = ("paws-all-0", "twin-all-0")
    assert {f"{stage}@{r}" for stage in ("pretrain", "embed") for r in runs} <= changed
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    reads_it = {
        name
        for name, stage in pipeline.items()
        if "semisup/data/readers.py" in dvcdeps.stage_code(stage, ["paws", "twin"], repo)
    }
    assert {name.split("@")[0] for name in changed} == reads_it
    run(repo, "git", "checkout", "--", "semisup/data/readers.py")
    assert _status(repo) == set()

    _append(repo, "semisup/methods/paws.py")
    assert _status(repo) == {"pretrain@paws-all-0"}
    run(repo, "git", "checkout", "--", "semisup/methods/paws.py")
    _append(repo, "semisup/methods/common.py")  # what every method's loss imports
    assert _status(repo) == {"pretrain@paws-all-0", "pretrain@twin-all-0"}
    run(repo, "git", "checkout", "--", "semisup/methods/common.py")
