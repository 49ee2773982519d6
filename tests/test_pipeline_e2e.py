"""The whole pipeline in a temporary git + DVC repository on digits: repro, experiments, metrics diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from semisup.config import load_params
from semisup.data.subsets import read_subset
from semisup.methods import METHODS as REGISTRY
from tests.support import copy_repo, run, untrained_knn

METHODS = tuple(REGISTRY)  # every method of the registry

# How far above its untrained encoder every method's kNN@20 must be after the 2 epochs of the session's
# `trained_repo` (tests/support.py E2E_PARAMS). Measured here (seed 0, bfloat16): untrained 0.638;
# CrossEntropy 0.777, InfoNCE 0.708, SuNCEt 0.733, PAWS 0.691. The
# smallest gap, PAWS' 0.053, is 19 of the 359 test images; 0.03 (11 images) leaves room for another
# machine's rounding (about 0.01 on the demo) and still fails an encoder that did not learn.
MARGIN = 0.03


@pytest.fixture(scope="module")
def repo(trained_repo, tmp_path_factory) -> Path:
    """This module's copy of the session's git + DVC repository, every stage of every method reproduced
    on a tiny digits budget (tests/conftest.py `trained_repo`)."""
    return copy_repo(trained_repo, tmp_path_factory.mktemp("e2e") / "repo")


@pytest.mark.slow
def test_repro_scores_every_method_above_its_untrained_encoder(repo):
    # The bar: the encoder as pretrain initialises it, scored by the project's kNN on the same shards,
    # bank (the run's subset) and test split. Chance (0.1) would be no bar: untrained, it scores 0.638.
    params = load_params(repo / "params.yaml")
    bank = read_subset(repo / "data" / "splits" / "all-0.json")
    untrained = untrained_knn("paws", params, repo / "data" / "shards", bank)["knn_k20"]
    trained = {}
    for method in METHODS:
        scores = json.loads((repo / "metrics" / "runs" / f"{method}-all-0" / "knn.json").read_text())
        assert set(scores) >= {"k20", "k200"}
        trained[method] = scores["k20"]["accuracy"]
    print(f"kNN@20 untrained {untrained:.4f}, trained {trained}")
    assert all(score > untrained + MARGIN for score in trained.values()), (untrained, trained)
    for method in METHODS:
        scores = json.loads((repo / "metrics" / "runs" / f"{method}-all-0" / "knn.json").read_text())
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
    assert set(data) == {"metrics/table.json"}  # dvc.yaml's one metrics file; metrics/study/ stays a file
    assert set(data["metrics/table.json"]["data"]) == {f"{m}-all" for m in METHODS}
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
    # (and the code stage, which reads the methods section: it writes the same digests again)
    runs = {f"{s}@paws-all-0" for s in ("pretrain", "embed", "knn", "linear")}
    cards = {f"model@{m}-all-0" for m in METHODS}  # every card carries the study's summary
    assert ran == runs | {"code", "maps", "report"} | cards, proc.stdout
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert '"sharpen_temperature": 0.5' in text
    # The experiment's new paws metrics are reported next to the baseline's.
    assert text.count('"metrics/table.json"') >= 2
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
    # The maps read no kNN score; the model cards record knn.* and the scores.
    assert ran == {f"knn@{m}-all-0" for m in METHODS} | {"report"} | {f"model@{m}-all-0" for m in METHODS}
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "weighted kNN at T=0.5")
    diff = json.loads(run(repo, "dvc", "metrics", "diff", "HEAD~1", "--all", "--json").stdout)
    assert set(diff) == {"metrics/table.json"}
    entry = diff["metrics/table.json"]
    # Unweighted votes do not depend on the temperature; the weighted ones do.
    for method in METHODS:
        assert entry[f"{method}-all.knn_k20"]["diff"] == 0
        knn = json.loads((repo / f"metrics/runs/{method}-all-0/knn.json").read_text())
        assert entry[f"{method}-all.knn_k20"]["new"] == round(knn["k20"]["accuracy"], 4)
        assert entry[f"{method}-all.weighted_knn_k20"]["new"] == round(knn["k20"]["weighted_accuracy"], 4)
    assert any(entry[f"{m}-all.weighted_knn_k20"]["diff"] != 0 for m in METHODS)
