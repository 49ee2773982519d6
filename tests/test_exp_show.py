"""`dvc exp show` reads as a table: dvc.yaml declares one metrics file, metrics/table.json, with kNN@20,
weighted kNN@20 and the linear probe per method x budget (means, and 95% intervals from two seeds on)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from tests.support import copy_repo, run

SCORES = ("knn_k20", "weighted_knn_k20", "linear")


def _flat(data: dict, lists: bool, prefix: str = "") -> list[str]:
    """The column names DVC makes of a metrics or params file: nested keys joined by dots; a list is a
    column of params (knn.k), not of metrics."""
    names = []
    for key, value in data.items():
        if isinstance(value, dict):
            names += _flat(value, lists, f"{prefix}{key}.")
        elif lists or not isinstance(value, list):
            names.append(f"{prefix}{key}")
    return names


def exp_show(repo: Path) -> tuple[dict[str, list[str]], list[str]]:
    """`dvc exp show`'s columns: ({"metrics"|"params"|"deps": names, "path:key" for metrics and params}
    from --json, over every row), and the text table's header (--csv: the same columns as a table)."""
    columns: dict[str, list[str]] = {"metrics": [], "params": [], "deps": []}
    for row in json.loads(run(repo, "dvc", "exp", "show", "--json").stdout):
        data = row["data"] or {}
        for kind in ("metrics", "params"):
            for path, entry in data.get(kind, {}).items():
                names = [f"{path}:{key}" for key in _flat(entry.get("data", {}), lists=kind == "params")]
                columns[kind] += [name for name in names if name not in columns[kind]]
        columns["deps"] += [path for path in data.get("deps", {}) if path not in columns["deps"]]
    header = next(csv.reader(io.StringIO(run(repo, "dvc", "exp", "show", "--csv").stdout)))
    return columns, header


def _add_seeds(repo: Path, seeds: list[int]) -> None:
    """The study on `seeds` without training: each new seed's run folders are seed 0's with every score
    lowered by 0.01 x seed; then the report stage, and a commit (so HEAD's row and the workspace's agree)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"]["seeds"] = seeds
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for method in params["method_names"]:
        for seed in seeds[1:]:
            folder = repo / "metrics" / "runs" / f"{method}-all-{seed}"
            shutil.copytree(repo / "metrics" / "runs" / f"{method}-all-0", folder)
            knn, linear = (json.loads((folder / name).read_text()) for name in ("knn.json", "linear.json"))
            for k in ("k20", "k200"):
                knn[k] = {name: value - 0.01 * seed for name, value in knn[k].items()}
            linear["accuracy"] -= 0.01 * seed
            (folder / "knn.json").write_text(json.dumps(knn))
            (folder / "linear.json").write_text(json.dumps(linear))
    run(repo, "python", "-m", "stages.report")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", f"seeds {seeds}")


@pytest.mark.slow
def test_exp_show_columns_of_the_default_run_and_of_a_three_seed_study(trained_repo, tmp_path):
    repo = copy_repo(trained_repo, tmp_path / "r")
    methods = yaml.safe_load((repo / "params.yaml").read_text())["method_names"]
    assert methods == ["crossentropy", "infonce", "suncet", "paws"]  # the default run: budget all, seed 0

    columns, header = exp_show(repo)
    # 12 columns (24 before, when metrics/study/ was declared: 6 per method x budget file).
    assert columns["metrics"] == [
        "metrics/table.json:crossentropy-all.knn_k20",
        "metrics/table.json:crossentropy-all.weighted_knn_k20",
        "metrics/table.json:crossentropy-all.linear",
        "metrics/table.json:infonce-all.knn_k20",
        "metrics/table.json:infonce-all.weighted_knn_k20",
        "metrics/table.json:infonce-all.linear",
        "metrics/table.json:suncet-all.knn_k20",
        "metrics/table.json:suncet-all.weighted_knn_k20",
        "metrics/table.json:suncet-all.linear",
        "metrics/table.json:paws-all.knn_k20",
        "metrics/table.json:paws-all.weighted_knn_k20",
        "metrics/table.json:paws-all.linear",
    ]
    # The table: Experiment, rev, typ, Created, parent, then the metrics (named without their file: no
    # other metrics file has the same names), the params and the deps.
    metric_names = [name.split(":", 1)[1] for name in columns["metrics"]]
    assert header[5 : 5 + len(metric_names)] == metric_names
    assert len(header) == 5 + len(metric_names) + len(columns["params"]) + len(columns["deps"])
    table = json.loads((repo / "metrics" / "table.json").read_text())
    for method in methods:  # one seed: each run's own scores
        knn = json.loads((repo / "metrics" / "runs" / f"{method}-all-0" / "knn.json").read_text())
        linear = json.loads((repo / "metrics" / "runs" / f"{method}-all-0" / "linear.json").read_text())
        assert table[f"{method}-all"] == {
            "knn_k20": round(knn["k20"]["accuracy"], 4),
            "weighted_knn_k20": round(knn["k20"]["weighted_accuracy"], 4),
            "linear": round(linear["accuracy"], 4),
        }
    print(f"default run: {len(columns['metrics'])} metrics columns, table header {len(header)} columns")

    _add_seeds(repo, [0, 1, 2])
    columns, header = exp_show(repo)
    # 24 columns (44 before: 11 per method x budget file): each score's mean and its interval's half-width.
    assert columns["metrics"] == [
        f"metrics/table.json:{method}-all.{name}"
        for method in methods
        for score in SCORES
        for name in (score, f"{score}_ci95")
    ]
    assert header[5:29] == [name.split(":", 1)[1] for name in columns["metrics"]]
    table = json.loads((repo / "metrics" / "table.json").read_text())
    half = sps.t.ppf(0.975, 2) * np.std([0.0, 0.01, 0.02], ddof=1) / np.sqrt(3)  # 0.0248
    for method in methods:
        knn = json.loads((repo / "metrics" / "runs" / f"{method}-all-0" / "knn.json").read_text())
        assert table[f"{method}-all"]["knn_k20"] == pytest.approx(knn["k20"]["accuracy"] - 0.01, abs=1e-4)
        assert all(
            table[f"{method}-all"][f"{score}_ci95"] == pytest.approx(half, abs=1e-4) for score in SCORES
        )
    print(f"3-seed study: {len(columns['metrics'])} metrics columns, table header {len(header)} columns")
