"""Stage report: the study's summary over seeds, its table, the label-efficiency figure and the curves.

Reads metrics/runs/<method>-<budget>-<seed>/{knn.json,linear.json,train/} for every run of params.yaml's
method_names (methods and configurations, each its own rows) x study.labeled_per_class x study.seeds
(other folders there are ignored), and data/splits/ for how many labels per class "all" means. Writes
metrics/summary.json (every statistic and paired test), metrics/table.json (dvc.yaml's metrics: what
`dvc exp show` compares, kNN@20, weighted kNN@20 and linear per method x budget, their means and 95%
intervals), metrics/study/<method>-<budget>.json (every metric's mean and interval, the budget
zero-padded: paws-0005.json), metrics/report.md (for a pull
request), metrics/report.html (the study page: the same table, the figures, every run's curves, per-class
accuracy and confusion matrices from each run's per_class.json and confusion.csv, and the maps stage's
t-SNE maps from metrics/maps/), metrics/plots/ (label_efficiency.png, knn_per_epoch/knn_k<k>.png and the
CSV files behind dvc.yaml's plots), and prints the table.

dvc.yaml's plots name no k, so they work for any knn.k: the figures' kNN metric is kNN@20, or kNN at the
first k when knn.k lacks 20 (plotted_k), in label_efficiency_knn.csv (with its `k`) and in the `knn` column
of epochs.csv (beside a knn_k<k> column per k); knn_per_epoch/ holds one figure per k.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click

from semisup.core.errors import DataError, UserError
from semisup.core.io import output_set, write_json, write_text
from semisup.core.versions import merge as merge_versions
from semisup.data.subsets import budget_name, run_name, subset_path
from semisup.reporting.report import (
    aggregate,
    compare_table,
    efficiency_rows,
    epoch_rows,
    format_table,
    markdown,
    metric_names,
    plot_curves,
    plot_label_efficiency,
    plotted_k,
    read_curve,
    run_scores,
    table_files,
    versus_methods,
    write_csv,
)
from semisup.reporting.report_page import RunDetails, page
from semisup.training.preflight import check_outputs
from stages.common import load, params_option, user_errors
from stages.console import done


def read_json(path: Path, stage: str) -> Any:
    """A run's JSON output; a clear error naming the stage that writes it."""
    if not path.exists():
        raise UserError(f"{path}: not found (run `dvc repro {stage}` first)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun `dvc repro -f {stage}`") from None


def pretrain_versions(runs: Path, run: str) -> dict:
    """The library versions the run's pretrain stage recorded (train/versions.json); {} for a run trained
    before it recorded them."""
    path = runs / run / "train" / "versions.json"
    return read_json(path, f"pretrain@{run}") if path.exists() else {}


def labels_per_class(splits: Path, budget: str, seed: int) -> float:
    """The x position of a budget: its number, or for all the pool's mean images per class."""
    if budget.isdigit():
        return float(budget)
    subset = read_json(subset_path(splits, budget, seed), f"splits@{budget}-{seed}")
    per_class = subset.get("per_class") if isinstance(subset, dict) else None
    if not per_class:
        raise DataError(f"{subset_path(splits, budget, seed)}: no per_class counts; rerun its splits stage")
    return sum(per_class) / len(per_class)


def run_details(
    runs: Path, maps: Path, methods: list[str], budgets: list[str], seeds: list[int]
) -> RunDetails:
    """Each run's per-class accuracy and confusion pairs, and the maps of the first seed; what is missing."""
    import numpy as np

    details = RunDetails()
    for m in methods:
        for b in budgets:
            for s in seeds:
                run = run_name(m, b, s)
                per_class, confusion = runs / run / "per_class.json", runs / run / "confusion.csv"
                if per_class.exists() and confusion.exists():
                    content = read_json(per_class, f"knn@{run}")
                    accuracy, details.per_class_k = content.get("per_class_accuracy", {}), content.get("k")
                    with confusion.open(newline="") as f:
                        pairs = [(row["actual"], row["predicted"]) for row in csv.DictReader(f)]
                    details.per_class.setdefault(m, {}).setdefault(b, []).append(accuracy)
                    details.confusion.setdefault(m, {}).setdefault(b, []).append(pairs)
                else:
                    details.missing.append(f"{per_class} or {confusion} (dvc repro knn@{run})")
            path = maps / f"{run_name(m, b, seeds[0])}.csv"
            if path.exists():
                table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
                details.maps.setdefault(m, {})[b] = (table[:, :2], table[:, 2].astype(np.int64))
            else:
                details.missing.append(f"{path} (dvc repro maps)")
    return details


def curve_file(runs: Path, run: str, metric: str) -> Path:
    """Where pretrain@run's dvclive logger writes a per-epoch metric."""
    return runs / run / "train" / "plots" / "metrics" / f"{metric}.tsv"


@click.command()
@params_option
@click.option("--runs", default="metrics/runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--splits", default="data/splits", show_default=True, type=click.Path(file_okay=False))
@click.option("--maps", default="metrics/maps", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="metrics", show_default=True, type=click.Path(file_okay=False))
@user_errors
def main(params_path: str, runs: str, splits: str, maps: str, out: str) -> None:
    """Aggregate every run of the study over seeds; write the summary, table, report and figures."""
    params = load(params_path)
    methods, seeds, ks = list(params.method_names), list(params.study.seeds), list(params.knn.k)
    budgets = [budget_name(b) for b in params.study.labeled_per_class]
    runs_dir, out_dir = Path(runs), Path(out)
    scores, versions = read_scores(runs_dir, methods, budgets, seeds, ks)
    summary = summarise(params, scores, versions)
    budget_x = {b: labels_per_class(Path(splits), b, seeds[0]) for b in budgets}
    curve_metrics = [f"knn_k{k}" for k in ks] + ["loss"] if params.knn.monitor_every > 0 else ["loss"]
    curves = {
        metric: {
            b: {
                m: [read_curve(curve_file(runs_dir, run_name(m, b, s), metric), metric) for s in seeds]
                for m in methods
            }
            for b in budgets
        }
        for metric in curve_metrics
    }
    details = run_details(runs_dir, Path(maps), methods, budgets, seeds)
    # Everything is read and checked: now write.
    check_outputs(out)
    rows = table_files(summary)
    k_plotted = plotted_k(ks)
    note = "" if params.knn.monitor_every > 0 else "no per-epoch kNN scores (knn.monitor_every = 0)"
    names = ("summary.json", "table.json", "study", "report.md", "plots", "report.html")
    # The whole set appears together: a killed or failed report leaves the previous one in place.
    with output_set(*(out_dir / n for n in names)) as targets:
        summary_json, table, study, report_md, plots, report_html = targets
        write_json(summary_json, summary)
        write_json(table, compare_table(summary, k_plotted))
        study.mkdir()
        for name, row in rows.items():
            write_json(study / f"{name}.json", row)
        write_text(report_md, markdown(summary))
        write_plots(plots, summary, budget_x, curves, ks, note)
        shown = {metric: curves[metric] for metric in (f"knn_k{k_plotted}", "loss") if metric in curves}
        efficiency = (plots / "label_efficiency.png").read_bytes()
        write_text(report_html, page(summary, efficiency, shown, details))
    click.echo(format_table(summary))
    done(
        f"report: {out}/summary.json, table.json, report.md, report.html, study/, plots/ "
        f"({len(rows)} method x budget rows)"
    )


def read_scores(
    runs_dir: Path, methods: list[str], budgets: list[str], seeds: list[int], ks: list[int]
) -> tuple[dict, list[dict]]:
    """Every run's scores, {method: {budget: {seed: {metric: value}}}}, and the library versions that
    computed each run's numbers (its pretrain, knn and linear stages)."""
    scores: dict[str, dict[str, dict[int, dict[str, float]]]] = {m: {b: {} for b in budgets} for m in methods}
    versions = []
    for m in methods:
        for b in budgets:
            for s in seeds:
                run = run_name(m, b, s)
                knn = read_json(runs_dir / run / "knn.json", f"knn@{run}")
                linear = read_json(runs_dir / run / "linear.json", f"linear@{run}")
                scores[m][b][s] = run_scores(knn, linear, ks, where=str(runs_dir / run))
                versions += [
                    knn.get("versions", {}),
                    linear.get("versions", {}),
                    pretrain_versions(runs_dir, run),
                ]
    return scores, versions


def summarise(params: Any, scores: dict, versions: list[dict]) -> dict:
    """The study's summary over seeds, with the versions behind it and, for rows of configurations, which
    method each runs and what its settings buy over it."""
    names = metric_names(list(params.knn.k))
    summary = aggregate(scores, names) | {"versions": merge_versions(versions)}
    configured = {m: params.method_of(m) for m in params.method_names if m in params.configurations}
    if configured:
        summary["configurations"] = configured
        versus = versus_methods(scores, names, configured)
        if versus:
            summary["versus_methods"] = versus
    return summary


def write_plots(plots: Path, summary: dict, budget_x: dict, curves: dict, ks: list[int], note: str) -> None:
    """plots/: the label-efficiency figure and its CSV files, epochs.csv and a kNN-per-epoch figure per k.
    dvc.yaml's plots read names without a k: the plotted k's scores, with that k for the tooltip."""
    k_plotted = plotted_k(ks)
    knn_plotted = f"knn_k{k_plotted}"
    plots.mkdir()
    plot_label_efficiency(plots / "label_efficiency.png", summary, budget_x, [knn_plotted, "linear"])
    columns = ["method", "budget", "labels_per_class", "accuracy", "ci_low", "ci_high"]
    knn_rows = [row | {"k": k_plotted} for row in efficiency_rows(summary, knn_plotted, budget_x)]
    write_csv(plots / "label_efficiency_knn.csv", knn_rows, [*columns[:2], "k", *columns[2:]])
    write_csv(plots / "label_efficiency_linear.csv", efficiency_rows(summary, "linear", budget_x), columns)
    epochs = [row | {"knn": row.get(knn_plotted)} for row in epoch_rows(curves)]  # empty: monitor off
    knn_columns = [m for m in curves if m != "loss"]
    write_csv(plots / "epochs.csv", epochs, ["method", "budget", "epoch", *knn_columns, "knn", "loss"])
    (plots / "knn_per_epoch").mkdir()
    for k in ks:
        plot_curves(plots / "knn_per_epoch" / f"knn_k{k}.png", curves.get(f"knn_k{k}", {}), k, note=note)


if __name__ == "__main__":
    main()
