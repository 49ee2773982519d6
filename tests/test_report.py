"""The report stage on per-run files written here: statistics over seeds, paired tests, table, figures."""

from __future__ import annotations

import csv
import html
import json
import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from dvclive import Live
from PIL import Image
from scipy import stats as sps

from semisup.core.errors import DataError
from semisup.reporting.report import (
    aggregate,
    format_table,
    markdown,
    read_curve,
    run_scores,
    table_file_name,
    table_files,
)
from stages import report as report_stage
from tests.support import git_project, run

METHODS = ["crossentropy", "paws"]
KS = [20, 200]
BUDGETS = ["5", "all"]
SEEDS = [0, 1, 2]
POOL = [25, 25, 24]  # labeled images per class of the whole labeled split (what "all" means)


def score(method: str, budget: str, seed: int, metric: str) -> float:
    """Distinct made-up scores: paws beats crossentropy by 0.05 +- 0.001 per seed; a mix-up shows."""
    base = 0.6 + (0.1 if budget == "all" else 0.0) + 0.01 * seed + 0.001 * len(metric)
    return base + (0.05 + 0.001 * (seed % 2) if method == "paws" else 0.0)


def write_inputs(
    root,
    seeds=SEEDS,
    monitor_every: int = 1,
    epochs: int = 3,
    ks=KS,
    methods=METHODS,
    score=score,
    extra=None,
) -> None:
    """params.yaml (with `extra` sections), data/splits/ and metrics/runs/<run>/ as the study's stages
    write them, with `score`'s scores."""
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "method_names": list(methods),
                "knn": {"k": list(ks), "monitor_every": monitor_every},
                "study": {"seeds": list(seeds), "labeled_per_class": [5, "all"]},
                **(extra or {}),
            }
        )
    )
    (root / "data" / "splits").mkdir(parents=True)
    for seed in seeds:
        (root / "data" / "splits" / f"all-{seed}.json").write_text(json.dumps({"per_class": POOL}))
    for method in methods:
        for budget in BUDGETS:
            for seed in seeds:
                run = root / "metrics" / "runs" / f"{method}-{budget}-{seed}"
                run.mkdir(parents=True)
                knn = {
                    f"k{k}": {
                        "accuracy": score(method, budget, seed, f"knn_k{k}"),
                        "weighted_accuracy": score(method, budget, seed, f"weighted_knn_k{k}"),
                    }
                    for k in ks
                }
                (run / "knn.json").write_text(json.dumps(knn))
                (run / "linear.json").write_text(
                    json.dumps({"accuracy": score(method, budget, seed, "linear")})
                )
                live = Live(str(run / "train"), dvcyaml=False, save_dvc_exp=False)
                for epoch in range(1, epochs + 1):  # as the pretrain stage logs: step = epoch, from 1
                    live.step = epoch
                    for k in ks:
                        live.log_metric(f"knn_k{k}", 0.1 * epoch + 0.01 * seed + 0.0001 * k)
                    live.log_metric("loss", 2.0 / epoch)
                live.end()


def invoke(root, out=None):
    args = ["--params", str(root / "params.yaml"), "--runs", str(root / "metrics" / "runs")]
    args += ["--splits", str(root / "data" / "splits"), "--out", str(out or root / "out")]
    return CliRunner().invoke(report_stage.main, args)


def test_statistics_over_seeds_and_paired_tests(tmp_path):
    write_inputs(tmp_path)
    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["methods"] == METHODS and summary["budgets"] == BUDGETS and summary["seeds"] == SEEDS
    assert summary["metrics"] == ["knn_k20", "weighted_knn_k20", "knn_k200", "weighted_knn_k200", "linear"]
    paws = [score("paws", "5", s, "linear") for s in SEEDS]
    ce = [score("crossentropy", "5", s, "linear") for s in SEEDS]
    stats = summary["results"]["paws"]["5"]["linear"]
    low, high = sps.t.interval(0.95, df=2, loc=np.mean(paws), scale=sps.sem(paws))
    assert stats["mean"] == pytest.approx(np.mean(paws)) and stats["std"] == pytest.approx(
        np.std(paws, ddof=1)
    )
    assert (stats["ci_low"], stats["ci_high"], stats["n"]) == (pytest.approx(low), pytest.approx(high), 3)
    comparison = summary["comparisons"]["5"]["linear"]
    assert comparison["best"] == "paws"
    versus = comparison["vs_best"]["crossentropy"]
    assert versus["p_value"] == pytest.approx(sps.ttest_rel(ce, paws).pvalue)
    assert versus["mean_diff"] == pytest.approx(-0.05 - 0.001 / 3)
    # A steady 0.05 gap over three paired seeds is distinguishable although the intervals overlap.
    assert versus["indistinguishable_from_best"] is False and versus["p_value"] < 0.05
    assert comparison["vs_best"]["paws"]["indistinguishable_from_best"] is True


def test_each_configuration_is_compared_with_its_own_method(tmp_path):
    # paws_x (a configuration of paws) gains 0.02, 0.03, 0.04 over paws on seeds 0, 1, 2 at every budget;
    # crossentropy is the best method but not paws_x's baseline.
    def gains(method: str, budget: str, seed: int, metric: str) -> float:
        if method == "paws_x":
            return score("paws", budget, seed, metric) + 0.02 + 0.01 * seed
        return score(method, budget, seed, metric) + (0.2 if method == "crossentropy" else 0.0)

    methods = [*METHODS, "paws_x"]
    write_inputs(tmp_path, methods=methods, score=gains, extra={"methods": {"paws_x": {"method": "paws"}}})
    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["configurations"] == {"paws_x": "paws"}
    x = [gains("paws_x", "all", s, "linear") for s in SEEDS]
    paws = [gains("paws", "all", s, "linear") for s in SEEDS]
    versus = summary["versus_methods"]["all"]["linear"]["paws_x"]
    assert versus["method"] == "paws" and versus["mean_diff"] == pytest.approx(0.03)
    assert versus["p_value"] == pytest.approx(sps.ttest_rel(x, paws).pvalue)
    low, high = sps.t.interval(0.95, df=2, loc=0.03, scale=sps.sem(np.subtract(x, paws)))
    assert (versus["ci_low"], versus["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert set(summary["versus_methods"]) == set(BUDGETS)  # every budget; only configurations have rows
    assert all(
        set(by_config) == {"paws_x"} for b in BUDGETS for by_config in summary["versus_methods"][b].values()
    )
    report = (tmp_path / "out" / "report.md").read_text()
    section = report.split("## Paired differences with each configuration's method")[1]
    p = sps.ttest_rel(x, paws).pvalue
    assert f"| all | linear | paws_x | paws | +0.030{' *' if p < 0.05 else ''} |" in section
    # The study page shows the same rows, cell for cell.
    page = (tmp_path / "out" / "report.html").read_text()
    table = page.split('<table id="versus-methods">')[1].split("</table>")[0]
    rows = [re.findall(r"<td>([^<]*)</td>", row) for row in table.split("</tr>")[1:-1]]
    md_rows = [
        [html.escape(c.strip()) for c in line.split("|")[1:-1]]
        for line in section.splitlines()
        if line.startswith("| ") and "paws_x" in line
    ]
    assert rows == md_rows and len(rows) == len(BUDGETS) * len(summary["metrics"])


def test_no_configuration_no_comparison_with_a_method(tmp_path):
    write_inputs(tmp_path)
    assert invoke(tmp_path).exit_code == 0
    assert "versus_methods" not in json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "configuration's method" not in (tmp_path / "out" / "report.md").read_text()
    assert '<table id="versus-methods">' not in (tmp_path / "out" / "report.html").read_text()


def test_table_report_and_metrics_files(tmp_path):
    write_inputs(tmp_path)
    result = invoke(tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "method",
        "labels/class",
        "kNN@20",
        "wkNN@20",
        "kNN@200",
        "wkNN@200",
        "linear",
    ]
    assert len({len(line) for line in lines[:5]}) == 1  # aligned
    assert lines[2].startswith("paws") and lines[2].split()[1] == "5" and lines[2].endswith("*")
    assert "95% t-interval over 3 seeds" in result.stdout
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| paws | 5 |" in report and "## Paired differences with the best method" in report
    row = json.loads((tmp_path / "out" / "study" / "paws-all.json").read_text())
    assert row["seeds"] == 3 and row["linear"]["mean"] == pytest.approx(
        np.mean([score("paws", "all", s, "linear") for s in SEEDS]), abs=1e-4
    )
    assert sorted(p.name for p in (tmp_path / "out" / "study").iterdir()) == [
        "crossentropy-0005.json",
        "crossentropy-all.json",
        "paws-0005.json",
        "paws-all.json",
    ]
    with open(tmp_path / "out" / "plots" / "label_efficiency_linear.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], float(r["labels_per_class"])) for r in rows] == [
        ("crossentropy", 5.0),
        ("crossentropy", pytest.approx(74 / 3)),
        ("paws", 5.0),
        ("paws", pytest.approx(74 / 3)),
    ]
    assert float(rows[0]["ci_low"]) < float(rows[0]["accuracy"]) < float(rows[0]["ci_high"])
    with open(tmp_path / "out" / "plots" / "label_efficiency_knn.csv") as f:
        knn_rows = list(csv.DictReader(f))
    assert {r["k"] for r in knn_rows} == {"20"}  # dvc.yaml's kNN plot: k = 20 when knn.k has it
    assert float(knn_rows[0]["accuracy"]) == pytest.approx(
        np.mean([score("crossentropy", "5", s, "knn_k20") for s in SEEDS])
    )
    for name in ("label_efficiency", "knn_per_epoch/knn_k20", "knn_per_epoch/knn_k200"):
        with Image.open(tmp_path / "out" / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and image.size[0] > 300
            assert np.asarray(image.convert("L")).std() > 10  # something was drawn
    with open(tmp_path / "out" / "plots" / "epochs.csv") as f:
        epochs = list(csv.DictReader(f))
    first = next(r for r in epochs if (r["method"], r["budget"], r["epoch"]) == ("paws", "5", "1"))
    assert float(first["knn_k20"]) == pytest.approx(0.1 + 0.01 + 0.002)  # mean over seeds 0, 1, 2
    assert first["knn"] == first["knn_k20"]  # dvc.yaml's per-epoch kNN plot
    assert float(first["loss"]) == pytest.approx(2.0)


def test_study_rows_sort_by_budget_in_numeric_order():
    # `dvc metrics show` sorts rows by path: the names must sort 5, 10, 25, 100, all.
    names = {table_file_name("paws", b): b for b in ["25", "all", "100", "5", "10"]}
    assert [names[n] for n in sorted(names)] == ["5", "10", "25", "100", "all"]
    assert table_file_name("paws", "5") == "paws-0005" and table_file_name("paws", "all") == "paws-all"


def test_one_seed_says_so_instead_of_an_interval(tmp_path):
    write_inputs(tmp_path, seeds=[0])
    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    assert "One seed (0): no interval and no test" in result.stdout and "±" not in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["results"]["paws"]["5"]["linear"]["ci_low"] is None
    assert summary["comparisons"]["5"]["linear"]["vs_best"]["crossentropy"]["p_value"] is None
    assert "Paired differences" not in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "study" / "paws-0005.json").read_text())["linear"]["ci95"] is None


def test_monitor_off_still_writes_every_output(tmp_path):
    write_inputs(tmp_path, monitor_every=0)
    for tsv in (tmp_path / "metrics" / "runs").glob("*/train/plots/metrics/knn_k*.tsv"):
        tsv.unlink()
    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    assert all((tmp_path / "out" / "plots" / "knn_per_epoch" / f"knn_k{k}.png").exists() for k in KS)
    with open(tmp_path / "out" / "plots" / "epochs.csv") as f:
        epochs = list(csv.DictReader(f))
    assert epochs and all(r["knn"] == "" and float(r["loss"]) > 0 for r in epochs)


def test_dvc_plots_show_every_plot_without_k20(tmp_path):
    # knn.k without 20 (small budgets need a small k): every plot of dvc.yaml still finds its data.
    repo = git_project(
        tmp_path / "repo",
        {"method_names": METHODS, "knn.k": [5], "study.seeds": SEEDS, "study.labeled_per_class": [5, "all"]},
    )
    (tmp_path / "in").mkdir()
    write_inputs(tmp_path / "in", ks=[5])
    result = invoke(tmp_path / "in", out=repo / "metrics")
    assert result.exit_code == 0, result.output
    proc = run(repo, "dvc", "plots", "show", "--json")
    assert "could not find" not in proc.stderr.lower(), proc.stderr
    shown = json.loads(proc.stdout)
    assert not shown.get("errors"), shown["errors"]
    for plot in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]:
        if isinstance(plot, str):  # an image, or a folder of them (knn_per_epoch/: one per k)
            images = {name for name in shown["data"] if name == plot or name.startswith(plot + "/")}
            assert images and all(shown["data"][name][0]["type"] == "image" for name in images), plot
            continue
        ((title, spec),) = plot.items()
        ((_, field),) = spec["y"].items()
        (drawn,) = shown["data"][title]
        values = drawn["content"]["data"]["values"]
        assert values and all(v[field] != "" for v in values), (title, values[:2])
    assert "metrics/plots/knn_per_epoch/knn_k5.png" in shown["data"]
    title = "label efficiency, kNN (k = 20, or the first of knn.k; mean over seeds, 95% interval)"
    assert {v["k"] for v in shown["data"][title][0]["content"]["data"]["values"]} == {"5"}


@pytest.mark.parametrize(
    ("missing", "stage"),
    [
        ("metrics/runs/paws-all-1/knn.json", "dvc repro knn@paws-all-1"),
        ("metrics/runs/paws-5-2/linear.json", "dvc repro linear@paws-5-2"),
        ("data/splits/all-0.json", "dvc repro splits@all-0"),
    ],
)
def test_missing_file_names_file_and_stage(tmp_path, missing, stage):
    write_inputs(tmp_path)
    (tmp_path / missing).unlink()
    result = invoke(tmp_path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and missing in result.stderr and stage in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written before every input is checked


def test_other_folders_under_runs_are_ignored(tmp_path):
    write_inputs(tmp_path)
    (tmp_path / "metrics" / "runs" / "infonce-5-0").mkdir()  # a method no longer in method_names
    assert invoke(tmp_path).exit_code == 0
    assert "infonce" not in json.loads((tmp_path / "out" / "summary.json").read_text())["results"]


def test_run_scores_missing_k_is_a_data_error():
    with pytest.raises(DataError, match=r"runs/paws-5-0/knn.json: no scores for k200"):
        run_scores(
            {"k20": {"accuracy": 0.5, "weighted_accuracy": 0.5}}, {"accuracy": 0.5}, KS, "runs/paws-5-0"
        )


def test_read_curve_rejects_other_columns(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("step\tloss\n1\t0.5\n")
    with pytest.raises(DataError, match="'step' and 'knn_k20'"):
        read_curve(path, "knn_k20")


def test_markdown_and_table_files_from_aggregate():
    scores = {m: {"5": {s: {"linear": score(m, "5", s, "linear")} for s in SEEDS}} for m in METHODS}
    summary = aggregate(scores, ["linear"])
    assert table_files(summary)["paws-0005"]["linear"]["ci95"] == pytest.approx(
        summary["results"]["paws"]["5"]["linear"]["half_width"], abs=1e-4
    )
    text = markdown(summary)
    assert "| 5 | linear | paws | crossentropy |" in text
    assert format_table(summary).splitlines()[2].endswith("*")


@pytest.mark.parametrize(("seeds", "ks"), [(SEEDS, KS), ([0], KS), (SEEDS, [5, 50])])
def test_table_json_is_the_few_numbers_dvc_exp_show_compares(tmp_path, seeds, ks):
    write_inputs(tmp_path, seeds=seeds, ks=ks)
    assert invoke(tmp_path).exit_code == 0
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    k = 20 if 20 in ks else ks[0]  # the figures' k: kNN@20, or the first k of knn.k
    metrics = [f"knn_k{k}", f"weighted_knn_k{k}", "linear"]
    assert list(table) == ["crossentropy-0005", "crossentropy-all", "paws-0005", "paws-all"]
    t = sps.t.ppf(0.975, len(seeds) - 1) if len(seeds) > 1 else None
    for method in METHODS:
        for budget in BUDGETS:
            row = table[table_file_name(method, budget)]
            values = {m: [score(method, budget, s, m) for s in seeds] for m in metrics}
            if t is None:  # one seed: the run's own scores, no interval
                assert row == {m: round(values[m][0], 4) for m in metrics}
                continue
            assert list(row) == [c for m in metrics for c in (m, f"{m}_ci95")]
            for m in metrics:
                assert row[m] == pytest.approx(np.mean(values[m]), abs=5e-5)
                half = t * np.std(values[m], ddof=1) / np.sqrt(len(seeds))
                assert row[f"{m}_ci95"] == pytest.approx(half, abs=5e-5)
