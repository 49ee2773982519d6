"""Stage report: gather every method's kNN scores and training curves into one summary and figures.

Writes metrics/summary.json (method x k accuracies), metrics/plots/knn_k<k>.png (kNN accuracy per
epoch, one curve per method) and prints the method x k table.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from semisup.errors import DataError, UserError
from semisup.io import output_set, write_json
from semisup.preflight import check_outputs
from semisup.report import Curve, format_table, plot_curves, read_curve, summarize
from stages.common import load, params_option, user_errors
from stages.console import done


def curve_path(metrics: Path, method: str, k: int) -> Path:
    """Where pretrain@method's dvclive logger writes the kNN@k curve."""
    return metrics / method / "train" / "plots" / "metrics" / f"knn_k{k}.tsv"


def load_knn_json(metrics: Path, method: str) -> dict:
    """The contents of metrics/method/knn.json."""
    path = metrics / method / "knn.json"
    if not path.exists():
        raise UserError(f"{path}: not found (run `dvc repro knn@{method}` first)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun `dvc repro -f knn@{method}`") from None


def load_curves(metrics: Path, methods: list[str], k: int) -> dict[str, Curve]:
    """method -> (epochs, kNN@k accuracy) of every method's pretraining run."""
    curves = {}
    for method in methods:
        path = curve_path(metrics, method, k)
        if not path.exists():
            raise UserError(f"{path}: not found (run `dvc repro pretrain@{method}` first)")
        curves[method] = read_curve(path, f"knn_k{k}")
    return curves


@click.command()
@params_option
@click.option("--metrics", default="metrics", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="metrics", show_default=True, type=click.Path(file_okay=False))
@user_errors
def main(params_path: str, metrics: str, out: str) -> None:
    """Summarise every method's kNN scores and plot kNN accuracy per epoch."""
    params = load(params_path)
    methods, ks, metrics_dir = list(params.method_names), params.knn.k, Path(metrics)
    knn_json = {method: load_knn_json(metrics_dir, method) for method in methods}
    summary = summarize(knn_json, ks, where=str(metrics_dir / "{method}" / "knn.json"))
    monitored = params.knn.monitor_every > 0
    curves = {k: load_curves(metrics_dir, methods, k) if monitored else {} for k in ks}
    # Everything is read and checked: now write.
    check_outputs(out)
    note = "" if monitored else "no per-epoch kNN scores (knn.monitor_every = 0)"
    with output_set(Path(out) / "summary.json", Path(out) / "plots") as (summary_json, plots):
        write_json(summary_json, summary)
        plots.mkdir()
        for k in ks:
            plot_curves(plots / f"knn_k{k}.png", curves[k], k, note=note)
    click.echo(format_table(summary, ks))
    done(f"report: {out}/summary.json, {out}/plots/" + ", ".join(f"knn_k{k}.png" for k in ks))


if __name__ == "__main__":
    main()
