"""A method is a module, a registry entry and a params section: a throwaway one runs through the real
pipeline beside a named configuration of another, and a code or params change reruns exactly the stages
whose code or params it is (a git + DVC repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from semisup.methods import METHODS
from semisup.pipeline import codedeps
from tests.support import TINY_PARAMS, copy_project, params_with, run

# InfoNCE under another name: what a user writes to add a method (docs/parameters.md, "Adding a method").
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
# The tests' tiny profile (one epoch, a tiny encoder) with the two methods, a configuration of paws and a
# 250-image bank's k.
TINY = TINY_PARAMS | {"method_names": "[paws,paws_same,twin]", "knn.k": "[20]"}
# A configuration of paws with paws' settings of the profile, set as a configuration sets them (its own
# batches; unset keys at PAWSParams' defaults, which the profile's paws keeps; a train override equal to
# the global value): the same training, so the same encoder, to the byte.
PAWS_SAME = {"method": "paws", "unlabeled_batch": 128, "labeled_batch": 64, "train": {"epochs": 1}}


def _status(repo: Path) -> set[str]:
    """The stages `dvc status` names (those whose own deps, params or outputs changed)."""
    return set(json.loads(run(repo, "dvc", "status", "--json").stdout or "{}"))


def _append(repo: Path, rel: str) -> None:
    with (repo / rel).open("a") as f:
        f.write("# a change\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC copy of the project with a fifth method added as docs/parameters.md says, run once."""
    repo = copy_project(tmp_path_factory.mktemp("repo"))
    (repo / "semisup/methods/twin.py").write_text(TWIN_MODULE)
    with (repo / "semisup/methods/__init__.py").open("a") as f:
        f.write(TWIN_ENTRY)
    params = params_with(TINY)
    params["methods"]["twin"] = {"unlabeled_batch": 128, "labeled_batch": 16, "temperature": 0.1}
    params["methods"]["paws_same"] = PAWS_SAME
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
    assert summary["methods"] == ["paws", "paws_same", "twin"]
    assert run(repo, "python", "-m", "semisup.pipeline.dvcdeps").returncode == 0
    dry = run(repo, "python", "-m", "drivers.demo", "--dry-run").stdout
    # The demo profile scales its reference batch (128 of 250 images) and keeps the labeled one it never
    # encodes; a configuration's batches are scaled from its own, its labeled one by the few-labels rule
    # (its own 64 fits the demo's 10 per class: kept, as an explicit setting is).
    assert "-Smethods.twin.unlabeled_batch=66" in dry and "-Smethods.twin.labeled_batch=16" in dry
    assert "-Smethods.paws_same.unlabeled_batch=66" in dry and "-Smethods.paws_same.labeled_batch=64" in dry
    assert "twin" not in METHODS  # the test's copy only


@pytest.mark.slow
def test_results_record_the_library_versions_that_computed_them(repo):
    from semisup.core.versions import library_versions

    mine = library_versions()
    assert set(mine) == {"python", "tensorflow", "keras", "numpy", "scikit-learn", "dvc"}
    for rel in ("metrics/runs/paws-all-0/knn.json", "metrics/runs/paws-all-0/linear.json"):
        assert json.loads((repo / rel).read_text())["versions"] == mine
    assert json.loads((repo / "metrics/runs/twin-all-0/train/versions.json").read_text()) == mine
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["versions"] == {name: [version] for name, version in mine.items()}
    assert f"tensorflow {mine['tensorflow']}" in (repo / "metrics/report.md").read_text()


@pytest.mark.slow
def test_a_configuration_trains_beside_its_method_on_the_same_subset_and_seed(repo):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    subsets = [
        [(d["path"], d["md5"]) for d in lock[f"pretrain@{name}-all-0"]["deps"] if "splits" in d["path"]]
        for name in ("paws", "paws_same")
    ]
    assert subsets[0] == subsets[1] and [path for path, _ in subsets[0]] == ["data/splits/all-0.json"]
    # The same params through the configuration's path give the same encoder and scores: the same code.
    model = {n: (repo / f"models/{n}-all-0/encoder.keras").read_bytes() for n in ("paws", "paws_same")}
    assert model["paws"] == model["paws_same"]
    for rel in ("knn.json", "linear.json"):
        scores = [
            json.loads((repo / f"metrics/runs/{n}-all-0/{rel}").read_text()) for n in ("paws", "paws_same")
        ]
        assert scores[0] == scores[1]
    # The report has its own row, with the same statistics as any method's.
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["results"]["paws_same"]["all"]["linear"]["mean"] == scores[1]["accuracy"]
    report = (repo / "metrics/report.md").read_text()
    assert "| paws_same | all |" in report and "paws_same (paws)" in report
    assert summary["configurations"] == {"paws_same": "paws"}


@pytest.mark.slow
def test_a_change_to_a_configuration_reruns_only_its_runs(repo):
    assert _status(repo) == set()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["methods"]["paws_same"]["train"]["learning_rate"] = 0.01
    _write(repo, params)
    # The code stage reads the methods section (a configuration names its method there): it runs again
    # (a second) and writes the same digests, so only the configuration's pretrain stage is left to run, and
    # its model card, which records the configuration's settings.
    mine = {"pretrain@paws_same-all-0", "model@paws_same-all-0"}
    assert _status(repo) == {"code"} | mine
    run(repo, "dvc", "repro", "code")
    assert _status(repo) == mine
    # Another method for the configuration: its digest becomes that method's code.
    params["methods"]["paws_same"]["method"] = "suncet"
    _write(repo, params)
    run(repo, "dvc", "repro", "code")
    digest = json.loads((repo / "data/code/pretrain-paws_same.json").read_text())
    assert digest["method"] == "suncet" and "semisup/methods/suncet.py" in digest["files"]
    assert _status(repo) == mine
    run(repo, "git", "checkout", "--", "params.yaml")
    run(repo, "dvc", "repro", "code")  # DVC's run cache: the digests of these params and this code
    assert _status(repo) == set()


def _write(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _changed_by(repo: Path, rel: str) -> set[str]:
    """The stages a change to `rel` leaves to run: `dvc status` once the code stage has written the
    digests of the changed code; then the change is undone (the digests stay until the code stage runs)."""
    _append(repo, rel)
    run(repo, "dvc", "repro", "code")
    changed = _status(repo)
    run(repo, "git", "checkout", "--", rel)
    return changed


@pytest.mark.slow
def test_a_code_change_reruns_exactly_the_stages_that_run_that_code(repo):
    assert _status(repo) == set()
    assert "Stage 'pretrain@paws-all-0' didn't change, skipping" in run(repo, "dvc", "repro").stdout

    _append(repo, "semisup/data/readers.py")
    assert _status(repo) == {"code"}  # before the code stage runs, only it sees the change
    run(repo, "git", "checkout", "--", "semisup/data/readers.py")
    changed = _changed_by(repo, "semisup/data/readers.py")
    runs = ("paws-all-0", "paws_same-all-0", "twin-all-0")
    assert {f"{stage}@{r}" for stage in ("pretrain", "embed") for r in runs} <= changed
    reads_it = {
        module.rpartition(".")[2]
        for module in codedeps.stage_modules(repo)
        if "semisup/data/readers.py" in codedeps.closure(module, "paws", repo)
    }
    assert {name.split("@")[0] for name in changed} == reads_it

    runs = {"pretrain@paws-all-0", "pretrain@paws_same-all-0"}  # the configuration runs paws' code
    assert _changed_by(repo, "semisup/methods/paws.py") == runs
    assert _changed_by(repo, "semisup/methods/common.py") == runs | {"pretrain@twin-all-0"}
    run(repo, "dvc", "repro", "code")  # the code as committed: the same digests as the lock's
    assert _status(repo) == set()
