"""The study report: scores of every run (method x budget x seed) aggregated over seeds.

For each method x budget x metric (kNN@k, weighted kNN@k, linear probe): mean, std, n and a 95%
t-interval over seeds; at each budget and metric, the best method (highest mean) and every other
method's paired difference to it (paired t-test over seeds: the runs of one (budget, seed) share their
label subset and seed). A method is "not distinguishable from the best" when that test gives p >= 0.05.
With one seed there is no interval and no test, and the report says so.

Curves are the per-epoch kNN monitor and loss of pretraining, as dvclive writes them (`step\\t<metric>`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from semisup.core.errors import DataError
from semisup.core.io import atomic_path, write_text
from semisup.core.versions import describe as describe_versions
from semisup.reporting.stats import CONFIDENCE, describe, paired_test

ALPHA = 1.0 - CONFIDENCE
Curve = tuple[list[int], list[float]]  # (epochs, values)
# method -> budget name -> seed -> metric -> score
Scores = Mapping[str, Mapping[str, Mapping[int, Mapping[str, float]]]]


def metric_names(ks: Sequence[int]) -> list[str]:
    """The report's metrics, in column order: knn_k<k>, weighted_knn_k<k> per k, then linear."""
    return [name for k in ks for name in (f"knn_k{k}", f"weighted_knn_k{k}")] + ["linear"]


def plotted_k(ks: Sequence[int]) -> int:
    """The k of the figures' kNN metric (label efficiency, the per-epoch curve of dvc.yaml's plots):
    20 when knn.k lists it, else the first k."""
    return 20 if 20 in ks else ks[0]


def metric_label(metric: str) -> str:
    """A column title: knn_k20 -> kNN@20, weighted_knn_k20 -> wkNN@20, linear -> linear."""
    if metric.startswith("weighted_knn_k"):
        return f"wkNN@{metric.removeprefix('weighted_knn_k')}"
    if metric.startswith("knn_k"):
        return f"kNN@{metric.removeprefix('knn_k')}"
    return metric


def run_scores(knn: Mapping, linear: Mapping, ks: Sequence[int], where: str) -> dict[str, float]:
    """One run's scores by metric name, from its knn.json and linear.json contents."""
    scores: dict[str, float] = {}
    for k in ks:
        entry = knn.get(f"k{k}")
        if not isinstance(entry, Mapping) or not all(
            isinstance(entry.get(s), (int, float)) for s in ("accuracy", "weighted_accuracy")
        ):
            raise DataError(f"{where}/knn.json: no scores for k{k} (rerun its knn stage)")
        scores[f"knn_k{k}"] = float(entry["accuracy"])
        scores[f"weighted_knn_k{k}"] = float(entry["weighted_accuracy"])
    if not isinstance(linear.get("accuracy"), (int, float)):
        raise DataError(f"{where}/linear.json: no accuracy (rerun its linear stage)")
    scores["linear"] = float(linear["accuracy"])
    return scores


def aggregate(scores: Scores, metrics: Sequence[str]) -> dict[str, Any]:
    """Per method x budget x metric statistics over seeds, and paired comparisons with the best method."""
    methods = list(scores)
    budgets = list(next(iter(scores.values())))
    seeds = sorted(next(iter(next(iter(scores.values())).values())))
    results: dict[str, Any] = {m: {b: {} for b in budgets} for m in methods}
    comparisons: dict[str, Any] = {b: {} for b in budgets}
    for b in budgets:
        for metric in metrics:
            values = {m: [scores[m][b][s][metric] for s in seeds] for m in methods}
            for m in methods:
                results[m][b][metric] = describe(values[m])
            best = max(methods, key=lambda m: results[m][b][metric]["mean"])  # first of equal means
            vs_best = {}
            for m in methods:
                test = paired_test(values[m], values[best])
                p = test["p_value"]
                same = True if m == best else (None if p is None else bool(p >= ALPHA))
                vs_best[m] = {**test, "indistinguishable_from_best": same}
            comparisons[b][metric] = {"best": best, "vs_best": vs_best}
    return {
        "seeds": seeds,
        "budgets": budgets,
        "methods": methods,
        "metrics": list(metrics),
        "confidence": CONFIDENCE,
        "results": results,
        "comparisons": comparisons,
    }


def versus_methods(scores: Scores, metrics: Sequence[str], configured: Mapping[str, str]) -> dict[str, Any]:
    """What each configuration's own settings buy: its paired difference with the method it configures
    (configuration - method, paired t-test over seeds on the same label subsets), at each budget and
    metric, where the study runs that method too. budget -> metric -> configuration -> test + "method"."""
    out: dict[str, Any] = {}
    for config, method in configured.items():
        if method not in scores or config not in scores:
            continue
        for b, by_seed in scores[config].items():
            seeds = sorted(by_seed)
            for metric in metrics:
                test = paired_test(
                    [by_seed[s][metric] for s in seeds], [scores[method][b][s][metric] for s in seeds]
                )
                out.setdefault(b, {}).setdefault(metric, {})[config] = {"method": method, **test}
    return out


def versus_method_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """The report's cells of `versus_methods`: budget, metric, configuration, method, difference (marked
    when beyond seed noise: p < 0.05), interval, p."""
    rows = []
    for b, by_metric in summary.get("versus_methods", {}).items():
        for metric in summary["metrics"]:
            for config, test in by_metric.get(metric, {}).items():
                if test["p_value"] is None:
                    continue
                mark = " *" if test["p_value"] < ALPHA else ""
                rows.append(
                    [
                        b,
                        metric_label(metric),
                        config,
                        test["method"],
                        f"{test['mean_diff']:+.3f}{mark}",
                        f"[{test['ci_low']:+.3f}, {test['ci_high']:+.3f}]",
                        f"{test['p_value']:.3g}",
                    ]
                )
    return rows


def table_file_name(method: str, budget: str) -> str:
    """A study row's file name: "<method>-<budget>", the budget zero-padded to 4 digits ("paws-0005",
    "paws-all"). `dvc metrics show` sorts its rows by path, so the padding lists budgets in numeric
    order (5, 10, 25, not 10, 25, 5) and keeps a budget's name the same whatever others a study has."""
    return f"{method}-{budget.zfill(4) if budget.isdigit() else budget}"


def table_files(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """table_file_name -> {metric: {mean, ci95}, seeds}: one row of `dvc metrics show` each."""
    files = {}
    for m in summary["methods"]:
        for b in summary["budgets"]:
            stats = summary["results"][m][b]
            row: dict[str, Any] = {
                metric: {"mean": _r(stats[metric]["mean"]), "ci95": _r(stats[metric]["half_width"])}
                for metric in summary["metrics"]
            }
            files[table_file_name(m, b)] = row | {"seeds": len(summary["seeds"])}
    return files


def compare_table(summary: Mapping[str, Any], k: int) -> dict[str, dict[str, float | None]]:
    """The few numbers `dvc exp show` compares across experiments (metrics/table.json): per method x budget
    (table_file_name: "paws-all", "paws-0005"), kNN@k, weighted kNN@k and the linear probe, each the mean
    over seeds (one seed: the run's score) and, with two seeds or more, beside it <metric>_ci95, the
    half-width of its 95% t-interval. -> {row: {column: value}}."""
    several = len(summary["seeds"]) >= 2
    table = {}
    for m in summary["methods"]:
        for b in summary["budgets"]:
            stats, row = summary["results"][m][b], {}
            for metric in (f"knn_k{k}", f"weighted_knn_k{k}", "linear"):
                row[metric] = _r(stats[metric]["mean"])
                if several:
                    row[f"{metric}_ci95"] = _r(stats[metric]["half_width"])
            table[table_file_name(m, b)] = row
    return table


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _cell(summary: Mapping[str, Any], method: str, budget: str, metric: str) -> str:
    """mean ± half-width, then * for the best method and ~ for one not distinguishable from it."""
    stats = summary["results"][method][budget][metric]
    text = f"{stats['mean']:.3f}"
    if stats["half_width"] is not None:
        text += f" ± {stats['half_width']:.3f}"
    comparison = summary["comparisons"][budget][metric]
    if comparison["best"] == method:
        return text + " *"
    return text + (" ~" if comparison["vs_best"][method]["indistinguishable_from_best"] else "  ")


def seeds_note(summary: Mapping[str, Any]) -> str:
    """What the table's intervals and marks mean, or that one seed gives none."""
    seeds = summary["seeds"]
    if len(seeds) < 2:
        return (
            f"One seed ({seeds[0]}): no interval and no test, so no method can be called better "
            "(* only marks the highest score); add seeds with study.seeds (e.g. -S 'study.seeds=[0,1,2]')."
        )
    pct = round(100 * summary["confidence"])
    return (
        f"Mean ± half-width of the {pct}% t-interval over {len(seeds)} seeds ({', '.join(map(str, seeds))}). "
        f"* best mean at that budget; ~ not distinguishable from it (paired t-test over seeds, p >= {ALPHA:.2f})."
    )


def table_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Header and one row per method x budget of formatted cells."""
    header = ["method", "labels/class"] + [metric_label(m) for m in summary["metrics"]]
    rows = [
        [m, b] + [_cell(summary, m, b, metric) for metric in summary["metrics"]]
        for b in summary["budgets"]
        for m in summary["methods"]
    ]
    return [header, *rows]


def format_table(summary: Mapping[str, Any]) -> str:
    """An aligned text table (methods x budgets by metrics) and its note."""
    table = table_rows(summary)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    return "\n".join(lines + ["", seeds_note(summary)])


def difference_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Every method's paired difference with the best at each budget and metric, as the report's cells:
    budget, metric, best, method (marked when not distinguishable), difference, interval, p."""
    rows = []
    for b in summary["budgets"]:
        for metric in summary["metrics"]:
            comparison = summary["comparisons"][b][metric]
            for m, test in comparison["vs_best"].items():
                if m == comparison["best"]:
                    continue
                mark = " (not distinguishable)" if test["indistinguishable_from_best"] else ""
                rows.append(
                    [
                        b,
                        metric_label(metric),
                        comparison["best"],
                        m + mark,
                        f"{test['mean_diff']:+.3f}",
                        f"[{test['ci_low']:+.3f}, {test['ci_high']:+.3f}]",
                        f"{test['p_value']:.3g}",
                    ]
                )
    return rows


def markdown(summary: Mapping[str, Any], title: str = "Study results") -> str:
    """metrics/report.md: the table, its note, and every paired difference with the best method."""
    table = table_rows(summary)
    out = [f"# {title}", "", seeds_note(summary), ""]
    out += ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    out += ["| " + " | ".join(cell.strip() for cell in row) + " |" for row in table[1:]]
    if summary.get("configurations"):
        named = ", ".join(f"{name} ({method})" for name, method in summary["configurations"].items())
        out += [
            "",
            f"Configurations, each a method with its own params (params.yaml: methods.<name>): {named}.",
        ]
    if summary.get("versions"):
        out += ["", f"Computed with {describe_versions(summary['versions'])}."]
    if len(summary["seeds"]) >= 2:
        pct = round(100 * summary["confidence"])
        out += ["", "## Paired differences with the best method", ""]
        out += [
            f"Difference to the best mean at each budget, its {pct}% t-interval and the paired t-test's p.",
            "",
        ]
        out += [
            "| labels/class | metric | best | method | difference | interval | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in difference_rows(summary):
            out.append("| " + " | ".join(row) + " |")
        versus = versus_method_rows(summary)
        if versus:
            out += ["", "## Paired differences with each configuration's method", ""]
            out += [
                "What a configuration's own settings buy: configuration - method on the same label subsets "
                f"and seeds, its {pct}% t-interval and the paired t-test's p (* p < {ALPHA:.2f}).",
                "",
                "| labels/class | metric | configuration | method | difference | interval | p |",
                "|---|---|---|---|---|---|---|",
            ]
            out += ["| " + " | ".join(row) + " |" for row in versus]
    return "\n".join(out) + "\n"


# --- label efficiency -------------------------------------------------------------------------------------


def efficiency_rows(summary: Mapping[str, Any], metric: str, budget_x: Mapping[str, float]) -> list[dict]:
    """Rows (method, budget, labels_per_class, accuracy, ci_low, ci_high) for a dvc plots CSV."""
    rows = []
    for m in summary["methods"]:
        for b in sorted(summary["budgets"], key=lambda b: budget_x[b]):
            stats = summary["results"][m][b][metric]
            rows.append(
                {
                    "method": m,
                    "budget": b,
                    "labels_per_class": budget_x[b],
                    "accuracy": stats["mean"],
                    "ci_low": stats["ci_low"] if stats["ci_low"] is not None else stats["mean"],
                    "ci_high": stats["ci_high"] if stats["ci_high"] is not None else stats["mean"],
                }
            )
    return rows


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as a CSV file with a header, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def plot_label_efficiency(
    path: str | os.PathLike, summary: Mapping[str, Any], budget_x: Mapping[str, float], metrics: Sequence[str]
) -> None:
    """PNG: accuracy against labels per class (log axis), one line per method, a band for the interval."""
    fig = Figure(figsize=(5.2 * len(metrics), 4.2), dpi=100)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        rows = efficiency_rows(summary, metric, budget_x)
        for m in summary["methods"]:
            mine = [r for r in rows if r["method"] == m]
            x = [r["labels_per_class"] for r in mine]
            line = ax.plot(x, [r["accuracy"] for r in mine], marker="o", markersize=4, label=m)[0]
            ax.fill_between(
                x,
                [r["ci_low"] for r in mine],
                [r["ci_high"] for r in mine],
                color=line.get_color(),
                alpha=0.15,
            )
        ax.set_xscale("log")
        ticks = sorted({budget_x[b] for b in summary["budgets"]})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labeled images per class (log scale)")
        ax.set_ylabel(f"test accuracy, {metric_label(metric)}")
        ax.set_title(f"{metric_label(metric)}")
        ax.grid(alpha=0.3)
        ax.legend(title="method", fontsize=8)
    n = len(summary["seeds"])
    band = (
        f"band: {round(100 * summary['confidence'])}% interval over {n} seeds"
        if n > 1
        else "one seed: no band"
    )
    fig.suptitle(f"Label efficiency (mean over seeds; {band})", fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


# --- per-epoch curves -------------------------------------------------------------------------------------


def read_curve(path: str | os.PathLike, metric: str) -> Curve:
    """(steps, values) of one dvclive TSV with columns `step` and `metric` (extra columns are ignored)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if reader.fieldnames is None or not {"step", metric} <= set(reader.fieldnames):
            raise DataError(
                f"{path}: expected tab-separated columns 'step' and {metric!r}, got {reader.fieldnames}"
            )
        try:
            rows = [(int(row["step"]), float(row[metric])) for row in reader]
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: line {reader.line_num}: not a number ({exc})") from None
    return [step for step, _ in rows], [value for _, value in rows]


def mean_curve(curves: Sequence[Curve]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs every seed logged, with the mean, min and max over seeds at each."""
    common = sorted(set.intersection(*(set(epochs) for epochs, _ in curves)))
    stacked = np.array([[dict(zip(e, v, strict=True))[t] for t in common] for e, v in curves])  # (S, E)
    return common, list(stacked.mean(0)), list(stacked.min(0)), list(stacked.max(0))


def plot_curves(
    path: str | os.PathLike,
    curves: Mapping[str, Mapping[str, Sequence[Curve]]],
    k: int,
    note: str = "",
) -> None:
    """PNG of kNN@k test accuracy per epoch: a panel per budget, per method the mean over seeds and a
    min-max band. curves: budget -> method -> one curve per seed; `note` replaces absent curves."""
    budgets = list(curves) or [""]
    fig = Figure(figsize=(max(6.4, 4.4 * len(budgets)), 4.4), dpi=100)
    for i, budget in enumerate(budgets):
        ax = fig.add_subplot(1, len(budgets), i + 1)
        for method, runs in curves.get(budget, {}).items():
            epochs, mean, low, high = mean_curve(runs)
            line = ax.plot(epochs, mean, marker="o", markersize=3, label=method)[0]
            if len(runs) > 1:
                ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
        if curves.get(budget):
            ax.legend(title="method", fontsize=8)
        if note:
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"kNN@{k} per epoch" + (f", {budget} labels/class" if budget else ""))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"test accuracy, kNN@{k}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def epoch_rows(curves: Mapping[str, Mapping[str, Mapping[str, Sequence[Curve]]]]) -> list[dict[str, Any]]:
    """Rows (method, budget, epoch, <metric>...) of means over seeds; curves: metric -> budget -> method -> runs."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for metric, by_budget in curves.items():
        for budget, by_method in by_budget.items():
            for method, runs in by_method.items():
                epochs, mean, _, _ = mean_curve(runs)
                for epoch, value in zip(epochs, mean, strict=True):
                    row = rows.setdefault(
                        (method, budget, epoch), {"method": method, "budget": budget, "epoch": epoch}
                    )
                    row[metric] = value if math.isfinite(value) else None
    return list(rows.values())
