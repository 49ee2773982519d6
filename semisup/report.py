"""Summaries and figures of kNN scores: a method x k table and kNN accuracy per epoch, one curve per method.

Curves are the per-epoch kNN monitor of pretraining, as dvclive writes them (a `step\\t<metric>` TSV).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from semisup.errors import DataError
from semisup.io import atomic_path

Curve = tuple[list[int], list[float]]  # (epochs, values)
Summary = dict[str, dict[str, dict[str, float]]]  # method -> "k<k>" -> {"accuracy", "weighted_accuracy"}

SCORES = ("accuracy", "weighted_accuracy")


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


def summarize(knn_metrics: Mapping[str, Mapping], ks: Sequence[int], where: str = "knn.json") -> Summary:
    """method -> "k<k>" -> {"accuracy", "weighted_accuracy"} from each method's knn.json contents."""
    summary: Summary = {}
    for method, metrics in knn_metrics.items():
        summary[method] = {}
        for k in ks:
            entry = metrics.get(f"k{k}")
            if not isinstance(entry, Mapping) or not all(
                isinstance(entry.get(s), (int, float)) for s in SCORES
            ):
                raise DataError(
                    f"{where.format(method=method)}: no scores for k{k} (rerun `dvc repro knn@{method}`)"
                )
            summary[method][f"k{k}"] = {s: float(entry[s]) for s in SCORES}
    return summary


def format_table(summary: Summary, ks: Sequence[int]) -> str:
    """An aligned text table: one row per method, accuracy and weighted accuracy per k."""
    header = ["method"] + [f"{name}@{k}" for k in ks for name in ("knn", "weighted")]
    rows = [
        [method] + [f"{scores[f'k{k}'][s]:.4f}" for k in ks for s in SCORES]
        for method, scores in summary.items()
    ]
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(_format_row(row, widths) for row in table)


def _format_row(row: list[str], widths: list[int]) -> str:
    """The first cell left-aligned (a name), the others right-aligned (numbers)."""
    cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
    return "  ".join(cells).rstrip()


def plot_curves(path: str | os.PathLike, curves: Mapping[str, Curve], k: int, note: str = "") -> None:
    """Write a PNG of kNN@k test accuracy per epoch, one curve per method; `note` replaces absent curves."""
    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    ax = fig.add_subplot()
    for method, (epochs, values) in curves.items():
        ax.plot(epochs, values, marker="o", markersize=3, label=method)
    if curves:
        ax.legend(title="method")
    if note:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"kNN accuracy per epoch (k = {k}, cosine)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test accuracy, kNN@{k}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
