"""Stage knn@M: score one method's embeddings with cosine kNN (bank = labeled train set, queries = test set).

Writes metrics/M/knn.json (per k: accuracy and weighted_accuracy), metrics/M/per_class.json (accuracy
per class at the smallest k) and metrics/M/confusion.csv (actual,predicted class names per test query,
smallest k, unweighted vote) for DVC's confusion template.
"""

from __future__ import annotations

import csv
from pathlib import Path

import click
import numpy as np

from semisup.config import resolve_run
from semisup.core.io import output_set, write_json
from semisup.core.versions import library_versions
from semisup.data.splits import class_counts
from semisup.data.subsets import parse_run, read_subset
from semisup.evaluation.embeddings import check_labels, load_class_names, load_embeddings
from semisup.evaluation.knn import accuracy_metrics, knn_predict, per_class_accuracy
from semisup.training.few_labels import fit_k
from semisup.training.preflight import check_outputs
from stages.common import load, params_option, run_option, user_errors
from stages.console import done


def write_confusion(path: Path, actual: np.ndarray, predicted: np.ndarray, names: list[str]) -> None:
    """One `actual,predicted` row of class names per query, for DVC's confusion template."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        writer.writerows((names[a], names[p]) for a, p in zip(actual, predicted, strict=True))


@click.command()
@run_option
@params_option
@click.option("--embeddings", default="data/embeddings", show_default=True, type=click.Path(file_okay=False))
@click.option("--shards", default="data/shards", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--out",
    default="metrics/runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Writes <out>/<run>/.",
)
@click.option("--split", "subset", default=None, type=click.Path(dir_okay=False), help="Study run: its bank.")
@user_errors
def main(run: str, params_path: str, embeddings: str, shards: str, out: str, subset: str | None) -> None:
    """Score the run's test embeddings by cosine kNN against its labeled embeddings (its subset's)."""
    method, budget, seed = parse_run(run)
    # An unknown method: one line, before anything is read.
    spec = resolve_run(load(params_path), method, run=run, seed=seed, budget=budget)
    knn = spec.params.knn
    names = load_class_names(Path(shards))
    name = run
    files = {split: Path(embeddings) / name / f"{split}.npz" for split in ("labeled", "test")}
    bank, bank_labels = load_embeddings(files["labeled"], name)
    queries, query_labels = load_embeddings(files["test"], name)
    check_labels(files["labeled"], bank, bank_labels, len(names), name)
    check_labels(files["test"], queries, query_labels, len(names), name)
    check_outputs(Path(out) / name)
    if subset:  # the bank is the run's labeled subset, the images it trained with
        ids = read_subset(subset, num_labeled=len(bank_labels))
        bank, bank_labels = bank[ids], bank_labels[ids]
    # A k larger than the bank: the few-labels rule's (each result keeps the key of the k asked for).
    ks, fitted = fit_k(knn.k, class_counts(bank_labels, len(names)))
    predictions = knn_predict(
        bank,
        bank_labels,
        queries,
        ks=ks,
        num_classes=len(names),
        temperature=knn.temperature,
        query_chunk=knn.query_chunk,
    )
    scores = accuracy_metrics(predictions, query_labels)
    if fitted:
        scores = {
            f"k{k}": scores[f"k{used}"] | ({"k": used} if used != k else {})
            for k, used in zip(knn.k, ks, strict=True)
        }
    smallest = predictions[min(ks)][0]  # unweighted votes at the smallest k
    per_class = dict(zip(names, per_class_accuracy(smallest, query_labels, len(names)), strict=True))
    # Per-class scores live in their own file so that `dvc metrics show` on knn.json stays a method x k table.
    outputs = [Path(out) / name / file for file in ("knn.json", "per_class.json", "confusion.csv")]
    with output_set(*outputs) as (scores_json, per_class_json, confusion_csv):
        write_json(scores_json, scores | {"versions": library_versions()})
        write_json(per_class_json, {"k": min(ks), "per_class_accuracy": per_class})
        write_confusion(confusion_csv, query_labels, smallest, names)
    done(f"{name}: " + " ".join(f"{k}={v['accuracy']:.4f}" for k, v in scores.items()) + f" -> {out}/{name}")


if __name__ == "__main__":
    main()
