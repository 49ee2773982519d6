"""The study through DVC on a tiny digits profile: per-run stages, subsets of methods, what reruns when.

One module-scoped git + DVC repository walks through the scenarios in order (each test builds on the
previous one's state): a single method, a new seed, a second repro, another subset of methods, a
change to one method's params.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from semisup.config import with_overrides
from semisup.methods import METHODS as REGISTRY
from tests.support import TINY_STUDY, copy_repo, git_project, params_with, run, tool_env, write_params

METHODS = tuple(REGISTRY)  # every method of the registry
RUN_STAGES = ("pretrain", "embed", "knn", "linear", "model")

TINY = TINY_STUDY


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    """The stages a dvc repro ran."""
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}


def set_params(repo: Path, **dotted) -> None:
    """Change repo's params.yaml as `dvc exp run -S` would; `a__b=v` sets a.b."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    changes = {key.replace("__", "."): value for key, value in dotted.items()}
    (repo / "params.yaml").write_text(yaml.safe_dump(with_overrides(params, changes), sort_keys=False))


def runs(*names: str) -> set[str]:
    return {f"{stage}@{name}" for name in names for stage in RUN_STAGES}


def models(*names: str) -> set[str]:
    """The model stages of runs: each reads the study's summary, so they rerun whenever the report's changes."""
    return {f"model@{name}" for name in names}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, digits_repo) -> Path:
    """A git + DVC copy of this project with the tiny profile and method_names [paws], reproduced once: a
    copy of the session's `digits_repo` (tests/conftest.py: TINY's data, downloaded and sharded)."""
    repo = copy_repo(digits_repo, tmp_path_factory.mktemp("study") / "r")
    write_params(repo / "params.yaml", TINY)
    run(repo, "git", "commit", "-qam", "the study's tiny profile")
    repo.joinpath("first_repro.txt").write_text(run(repo, "dvc", "repro").stdout)
    return repo


@pytest.mark.slow
def test_one_method_runs_end_to_end(repo):
    out = (repo / "first_repro.txt").read_text()
    # download and shard are digits_repo's, reproduced on the same data params and code.
    assert ran(subprocess.CompletedProcess([], 0, out)) == {"code", "splits@5-0", "maps", "report"} | runs(
        "paws-5-0"
    )
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert summary["methods"] == ["paws"] and summary["budgets"] == ["5"] and summary["seeds"] == [0]
    stats = summary["results"]["paws"]["5"]["linear"]
    linear = json.loads((repo / "metrics" / "runs" / "paws-5-0" / "linear.json").read_text())
    assert stats["mean"] == linear["accuracy"] and stats["n"] == 1 and stats["ci_low"] is None
    assert linear["train_images"] == 50  # the 5-per-class subset, not the 250-image labeled split
    assert "One seed (0)" in (repo / "metrics" / "report.md").read_text()
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json").stdout)
    assert set(next(iter(shown.values()))["data"]) == {"metrics/table.json"}
    # knn.k = [5]: dvc.yaml's plots name no k, so every one finds its data (no per-epoch kNN: monitor off).
    plots = json.loads(run(repo, "dvc", "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots["errors"]
    assert "metrics/plots/knn_per_epoch/knn_k5.png" in plots["data"]
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "paws")


@pytest.mark.slow
def test_a_new_seed_runs_only_its_stages(repo):
    set_params(repo, study__seeds=[0, 1])
    status = json.loads(run(repo, "dvc", "status", "--json").stdout)
    # maps draws the first seed's runs only, but its params (study) and its dep (data/embeddings) changed.
    assert set(status) == {"splits@5-1", "maps", "report"} | runs("paws-5-1")
    # paws-5-0's model card carries the study's intervals: it is assembled again.
    assert ran(run(repo, "dvc", "repro")) == {"splits@5-1", "maps", "report"} | runs("paws-5-1") | models(
        "paws-5-0"
    )
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    stats = summary["results"]["paws"]["5"]["knn_k5"]
    assert stats["n"] == 2 and stats["ci_low"] <= stats["mean"] <= stats["ci_high"]
    splits = [json.loads((repo / "data" / "splits" / f"5-{s}.json").read_text())["ids"] for s in (0, 1)]
    assert splits[0] != splits[1]


@pytest.mark.slow
def test_a_second_repro_runs_nothing(repo):
    assert ran(run(repo, "dvc", "repro")) == set()
    assert json.loads(run(repo, "dvc", "status", "--json").stdout) == {}
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "two seeds")


@pytest.mark.slow
def test_another_subset_of_methods(repo):
    set_params(repo, method_names=["suncet", "crossentropy"], study__seeds=[0])
    assert ran(run(repo, "dvc", "repro")) == {"maps", "report"} | runs("suncet-5-0", "crossentropy-5-0")
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert summary["methods"] == ["suncet", "crossentropy"]
    assert sorted(p.name for p in (repo / "metrics" / "study").iterdir()) == [
        "crossentropy-0005.json",
        "suncet-0005.json",
    ]
    # Paired: both methods' runs train and score with one subset file.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    hashes = {
        dep["md5"]
        for stage in (
            "pretrain@suncet-5-0",
            "pretrain@crossentropy-5-0",
            "knn@suncet-5-0",
            "linear@crossentropy-5-0",
        )
        for dep in lock[stage]["deps"]
        if dep["path"] == "data/splits/5-0.json"
    }
    assert len(hashes) == 1


@pytest.mark.slow
def test_a_method_param_reruns_only_that_methods_runs(repo):
    # paws back among the methods, with a new sharpening temperature: suncet's and crossentropy's runs stay.
    set_params(repo, method_names=["suncet", "crossentropy", "paws"], methods__paws__sharpen_temperature=0.5)
    status = json.loads(run(repo, "dvc", "status", "--json").stdout)
    assert not any(name.startswith(("pretrain@suncet", "pretrain@crossentropy")) for name in status)
    # The code stage reads the methods section (which names configurations): it writes the same digests.
    assert ran(run(repo, "dvc", "repro")) == {"code", "maps", "report"} | runs("paws-5-0") | models(
        "suncet-5-0", "crossentropy-5-0"
    )
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert summary["methods"] == ["suncet", "crossentropy", "paws"]


def assert_repro_fails(repo: Path, message: str) -> None:
    """`dvc repro report` fails, and the output says `message`."""
    proc = subprocess.run(
        ["dvc", "repro", "report"], cwd=repo, env=tool_env(), capture_output=True, text=True
    )
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_failed_report_leaves_the_last_one(repo):
    # The report's outputs are git's, not DVC's cache's: DVC must not delete them before the stage runs.
    report = repo / "metrics"
    before = {p: p.read_bytes() for p in sorted(report.glob("study/*")) + [report / "summary.json"]}
    params = (repo / "params.yaml").read_text()
    set_params(repo, linear__folds=1)  # only the probes and the report read it: the probes fail first
    assert_repro_fails(repo, "linear.folds: 1 is out of range")
    (repo / "params.yaml").write_text(params)
    set_params(repo, study__seeds=[])  # no run left: the report runs alone, and refuses
    assert_repro_fails(repo, "study.seeds: must not be empty")
    assert {p: p.read_bytes() for p in before} == before and (report / "report.md").exists()
    (repo / "params.yaml").write_text(params)
    assert ran(run(repo, "dvc", "repro")) == set()  # the failures changed nothing DVC records


def test_make_study_profile_is_valid_and_fits_the_smallest_budget():
    from drivers.profiles import STUDY as STUDY_PARAMS
    from drivers.study import BESIDE, MAIN, overrides
    from semisup.config import parse_params
    from tests.support import params_with

    # The main experiment runs every method, the other experiment's last, so that those are cached by then.
    assert sorted(MAIN) == sorted(METHODS)
    assert MAIN[-len(BESIDE) :] == BESIDE
    params = parse_params(params_with(STUDY_PARAMS))
    assert params.data.source == "digits"
    assert params.study.labeled_per_class == (5, 10, 25) and params.study.seeds == (0, 1, 2)
    smallest = min(params.study.labeled_per_class) * 10  # images in a 5-per-class subset of digits
    assert all(params.method(m).labeled_batch <= smallest for m in METHODS)
    assert max(params.knn.k) <= smallest
    assert "-Smethod_names=[infonce,suncet]" in overrides(("infonce", "suncet"), {})
    assert "-Strain.epochs=3" in overrides(tuple(METHODS), {"train.epochs": "3"})


def test_experiments_are_read_from_dvcs_json(tmp_path, monkeypatch):
    # drivers.dvcexp reads `dvc exp show --json` (no table, no ref path): a finished experiment, a queued
    # one, and one queued again under a name that also failed read as DVC has them.
    from drivers import dvcexp

    repo = tmp_path / "r"
    repo.mkdir()
    (repo / "params.yaml").write_text("x: 1\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: cp params.yaml out.txt\n    params: [x]\n    outs: [out.txt]\n"
    )
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "i"],
    ):
        run(repo, *cmd)
    run(repo, "dvc", "exp", "run", "-n", "done", "-S", "x=2")
    run(repo, "dvc", "exp", "run", "--queue", "-n", "waiting", "-S", "x=3")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", tool_env()["PATH"])
    shown = dvcexp.experiments()
    assert {n: e.state for n, e in shown.items()} == {"done": "success", "waiting": "queued"}
    assert dvcexp.read(dvcexp.finished("done"), "params.yaml") == b"x: 2\n"  # the experiment's commit
    assert dvcexp.finished("waiting") is None and dvcexp.finished("nothing") is None
    failed = {
        "name": "waiting",
        "revs": [{"rev": "f" * 40, "name": "waiting"}],
        "executor": {"state": "failed"},
    }
    again = json.loads(run(repo, "dvc", "exp", "show", "--json", "--hide-workspace").stdout)
    again[0]["experiments"].append(failed)
    assert dvcexp.parse_experiments(again)["waiting"].state == "queued"  # the queued one, not the failure


def test_a_command_gives_its_stages_one_compile_cache_and_removes_it(monkeypatch):
    from drivers import dvcexp

    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    with dvcexp.compile_cache():
        flag, _, folder = os.environ["TF_XLA_FLAGS"].partition("=")
        assert flag == "--tf_xla_persistent_cache_directory" and Path(folder).is_dir()
        seen = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['TF_XLA_FLAGS'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # what dvc, its queue's workers and the stages inherit
        assert seen.strip() == os.environ["TF_XLA_FLAGS"]
    assert "TF_XLA_FLAGS" not in os.environ and not Path(folder).exists()
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=2")  # the user's own: left alone
    with dvcexp.compile_cache():
        assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=2"
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=2"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["-S", "study.seeds=5"], "study.seeds: 5 is not a list"),  # DVC's matrix would fail on it, tersely
        (["-S", "study.seed=[0,1]"], "study.seed: unknown key"),
        (["-S", "study.labeled_per_class=[5,ALL]"], "study.labeled_per_class[1]: 'ALL' is not"),
        (["-S", "linear.folds=1"], "linear.folds: 1 is out of range"),
        (["-S", "study.seeds"], "-S 'study.seeds': expected KEY=VALUE"),
        (
            ["--profile", "paper-extra", "-S", "linear.folds=1"],
            "(params.yaml with the paper-extra study's precision part profile and -S linear.folds=1)",
        ),
    ],
)
def test_make_study_checks_its_settings_before_queueing(tmp_path, sets, message):
    repo = git_project(tmp_path / "p", {})
    proc = subprocess.run(
        [sys.executable, "-m", "drivers.study", *sets],
        cwd=repo,
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert "$ dvc" not in proc.stderr  # no dvc command ran: nothing was queued
    assert not (repo / ".dvc" / "tmp" / "exps").exists()


def test_every_cached_output_is_git_ignored():
    # `dvc exp apply` and `dvc checkout` bring outputs without the ignore files DVC writes where it runs a
    # stage: the repository's .gitignore must keep every DVC-cached output out of `git add -A`.
    root = Path(__file__).resolve().parents[1]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    item = {"${item.method}": "paws", "${item.budget}": "all", "${item.seed}": "0"}
    cached, kept = [], []
    for stage in stages.values():
        for out in stage.get("outs", []):
            path, flags = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            for placeholder, value in item.items():
                path = path.replace(placeholder, value)
            (cached if flags.get("cache", True) else kept).append(path)
    assert "models/paws-all-0/encoder.keras" in cached and "metrics/summary.json" in kept
    assert "models/paws-all-0/card.json" in cached and "models/paws-all-0/probe.npz" in cached
    # A path inside each output: the patterns name folders, and these paths need not exist here.
    inside = [f"{path}/x" for path in cached + kept]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *inside], cwd=root, capture_output=True, text=True
    ).stdout.split()
    assert sorted(ignored) == sorted(f"{path}/x" for path in cached)  # the report's outputs are git's


@pytest.mark.slow
def test_the_run_cache_restores_a_trained_run(repo):
    # docs/pipeline.md: "DVC's run cache restores a run that any experiment already trained". paws'
    # sharpening back to the recipe's, as the first repro trained it: its four stages come back from the run
    # cache, not trained again (a retrained encoder.keras would differ in its bytes: the zip records write
    # times).
    first = run(repo, "git", "log", "-1", "--format=%H", "--grep=^paws$").stdout.strip()
    lock_then = yaml.safe_load(run(repo, "git", "show", f"{first}:dvc.lock").stdout)["stages"]
    recipe = params_with(TINY)["methods"]["paws"]["sharpen_temperature"]
    assert recipe != 0.5
    set_params(repo, methods__paws__sharpen_temperature=recipe)
    proc = run(repo, "dvc", "repro")
    # The study-wide stages read every run's outputs; the model cards carry the study's numbers.
    assert ran(proc) == {"maps", "report"} | models("suncet-5-0", "crossentropy-5-0", "paws-5-0"), proc.stdout
    for stage in sorted(runs("paws-5-0") - models("paws-5-0")):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in proc.stdout, proc.stdout
    lock_now = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in runs("paws-5-0") - models("paws-5-0"):
        assert lock_now[stage]["outs"] == lock_then[stage]["outs"], stage


@pytest.mark.slow
def test_a_linear_param_reruns_only_the_probes_and_the_report(repo):
    # docs/pipeline.md: "changing `linear.*` reruns only the probes and the report".
    set_params(repo, linear__c_grid=[0.5, 1.0])
    probes = {f"linear@{m}-5-0" for m in ("suncet", "crossentropy", "paws")}
    cards = models(*(f"{m}-5-0" for m in ("suncet", "crossentropy", "paws")))  # they record linear.*
    assert set(json.loads(run(repo, "dvc", "status", "--json").stdout)) == probes | cards
    assert ran(run(repo, "dvc", "repro")) == probes | {"report"} | cards
    linear = json.loads((repo / "metrics" / "runs" / "paws-5-0" / "linear.json").read_text())
    assert linear["selected_by"] == "cv" and set(linear["cv_accuracy"]) == {"0.5", "1.0"}


def test_a_queued_experiment_left_without_a_worker_gets_one(monkeypatch, tmp_path):
    # DVC's workers stopped with the papers' study's third part still queued: the wait starts a worker
    # for it after a minute with none running, and returns once it has finished.
    from drivers import dvcexp, study

    seen = iter(
        [
            {"a": "running", "b": "queued"},
            {"a": "success", "b": "queued"},
            {"a": "success", "b": "queued"},
            {"a": "success", "b": "running"},
            {"a": "success", "b": "success"},
        ]
    )
    calls = []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setattr(study, "states", lambda names: (next(seen), {}))
    monkeypatch.setattr(dvcexp, "dvc", lambda *args, **kw: calls.append(args))
    clock = iter(range(0, 10_000, 40))  # a poll every 40 s: the second one in a row without a running
    monkeypatch.setattr(study.time, "monotonic", lambda: next(clock))  # experiment is 80 s after the first
    monkeypatch.setattr(study.time, "sleep", lambda s: None)
    study.wait_for_queue(("a", "b"))
    assert calls == [("queue", "start", "-j", "1")]


def test_the_wait_wakes_when_the_queue_records_a_task(monkeypatch, tmp_path):
    # A poll of `dvc exp show` that took 15 s means a 285 s wait: a task's end cuts it short, within a second.
    from drivers import study

    monkeypatch.chdir(tmp_path)
    results = tmp_path / study.QUEUE_RESULTS
    results.mkdir(parents=True)
    (results / "celery-task-meta-1").write_text("{}")  # an earlier task's
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 3 and not (results / "celery-task-meta-2").exists():
            (results / "celery-task-meta-2").write_text('{"status": "SUCCESS"}')

    monkeypatch.setattr(study.time, "sleep", sleep)
    study.nap(285.0)
    assert naps == [1.0, 1.0, 1.0]
    naps.clear()
    study.nap(4.0)  # nothing new: the whole wait
    assert naps == [1.0] * 4
