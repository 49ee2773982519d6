"""The whole pipeline in a temporary git + DVC repository on digits: repro, experiments, metrics diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support import git_project, run

METHODS = ("crossentropy", "infonce", "suncet", "paws")

# A tiny digits budget: every stage runs for real, in about a minute per repro on two cores.
TINY = {
    "data.source": "digits",
    "data.image_size": 32,
    "data.labeled_per_class": 25,
    "data.num_shards": 2,
    "train.epochs": 2,
    "train.shuffle_buffer": 500,
    "encoder.filters": 16,
    **{f"methods.{m}.unlabeled_batch": 128 for m in METHODS},
    **{f"methods.{m}.labeled_batch": 64 for m in METHODS},
    "methods.infonce.labeled_batch": 16,
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC clone of this project with a tiny digits params.yaml, reproduced once."""
    repo = tmp_path_factory.mktemp("repo")
    git_project(repo, TINY)
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "first results")
    return repo


@pytest.mark.slow
def test_repro_scores_every_method_above_chance(repo):
    for method in METHODS:
        scores = json.loads((repo / "metrics" / "runs" / f"{method}-all-0" / "knn.json").read_text())
        assert set(scores) >= {"k20", "k200"}
        assert scores["k20"]["accuracy"] > 0.2, (method, scores)  # chance is 0.1
        assert 0.0 <= scores["k200"]["weighted_accuracy"] <= 1.0
        linear = json.loads((repo / "metrics" / "runs" / f"{method}-all-0" / "linear.json").read_text())
        assert linear["accuracy"] > 0.2 and linear["train_images"] == 250
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert summary["methods"] == list(METHODS) and summary["budgets"] == ["all"]
    assert (repo / "metrics" / "plots" / "knn_per_epoch" / "knn_k20.png").stat().st_size > 1000
    assert (repo / "metrics" / "plots" / "label_efficiency.png").stat().st_size > 1000
    for method in METHODS:
        embeddings = repo / "data" / "embeddings" / f"{method}-all-0" / "test.npz"
        with __import__("numpy").load(embeddings) as npz:
            assert npz["features"].dtype.name == "float32" and npz["labels"].dtype.name == "int64"


@pytest.mark.slow
def test_second_repro_runs_nothing_and_status_is_clean(repo):
    proc = run(repo, "dvc", "repro")
    assert "Running stage" not in proc.stdout
    status = run(repo, "dvc", "status", "--json")
    assert json.loads(status.stdout) == {}


@pytest.mark.slow
def test_metrics_show_and_plots(repo):
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json").stdout)
    data = next(iter(shown.values()))["data"]
    assert set(data) == {f"metrics/study/{m}-all.json" for m in METHODS}
    plots = json.loads(run(repo, "dvc", "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    assert {
        "kNN accuracy per epoch (k = 20, or the first of knn.k; mean over seeds)",
        "metrics/plots/label_efficiency.png",
        "metrics/plots/knn_per_epoch/knn_k20.png",
        "metrics/plots/knn_per_epoch/knn_k200.png",
    } <= set(plots["data"])


@pytest.mark.slow
def test_experiment_on_one_method_reruns_only_that_method(repo):
    proc = run(repo, "dvc", "exp", "run", "-S", "methods.paws.sharpen_temperature=0.5")
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {f"{s}@paws-all-0" for s in ("pretrain", "embed", "knn", "linear")} | {"maps", "report"}, (
        proc.stdout
    )
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert '"sharpen_temperature": 0.5' in text
    # The experiment's new paws metrics are reported next to the baseline's.
    assert text.count('"metrics/study/paws-all.json"') >= 2
    # Back to the committed baseline: git holds params, dvc.lock and the metrics; DVC's cache the rest.
    run(repo, "git", "checkout", "HEAD", "--", ".")
    run(repo, "dvc", "checkout", "--force")
    assert json.loads(run(repo, "dvc", "status", "--json").stdout) == {}


@pytest.mark.slow
def test_metrics_diff_between_two_commits(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["knn"]["temperature"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(repo, "dvc", "repro")
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {f"knn@{m}-all-0" for m in METHODS} | {"report"}  # the maps read no kNN score
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "weighted kNN at T=0.5")
    diff = json.loads(run(repo, "dvc", "metrics", "diff", "HEAD~1", "--all", "--json").stdout)
    assert set(diff) == {f"metrics/study/{m}-all.json" for m in METHODS}
    # Unweighted votes do not depend on the temperature; the weighted ones do.
    for method in METHODS:
        entry = diff[f"metrics/study/{method}-all.json"]
        assert entry["knn_k20.mean"]["diff"] == 0
        knn = json.loads((repo / f"metrics/runs/{method}-all-0/knn.json").read_text())
        assert entry["knn_k20.mean"]["new"] == round(knn["k20"]["accuracy"], 4)
    assert any(diff[f"metrics/study/{m}-all.json"]["weighted_knn_k200.mean"]["diff"] != 0 for m in METHODS)
