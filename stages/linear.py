"""Stage linear@<run>: a linear probe on the run's frozen features (see semisup/evaluation/linear.py).

Trains on the run's labeled subset (data/splits/<budget>-<seed>.json) of data/embeddings/<run>/labeled.npz,
scores data/embeddings/<run>/test.npz, and writes metrics/runs/<run>/linear.json and the probe's weights,
models/<run>/probe.npz (the run's model folder: `semisup predict --probe linear` predicts with them).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from semisup.core.io import output_set, write_json
from semisup.core.versions import library_versions
from semisup.training.preflight import check_outputs
from stages.common import load, params_option, run_option, user_errors
from stages.console import done


@click.command()
@run_option
@click.option(
    "--split", required=True, type=click.Path(dir_okay=False), help="The run's labeled subset file."
)
@params_option
@click.option("--embeddings", default="data/embeddings", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="metrics/runs", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--models",
    default="models",
    show_default=True,
    help="Writes <models>/<run>/probe.npz.",
    type=click.Path(file_okay=False),
)
@user_errors
def main(run: str, split: str, params_path: str, embeddings: str, out: str, models: str) -> None:
    """Fit the probe on RUN's labeled subset and score it on the test split."""
    # NumPy and scikit-learn load here, after __main__ has set the BLAS thread count.
    from semisup.data.subsets import read_subset
    from semisup.evaluation.linear import fit_linear_probe, load_npz

    probe = load(params_path).linear
    train_x, train_y = load_npz(Path(embeddings) / run / "labeled.npz", f"embed@{run}")
    test_x, test_y = load_npz(Path(embeddings) / run / "test.npz", f"embed@{run}")
    ids = read_subset(split, num_labeled=len(train_y))
    check_outputs(Path(out) / run, Path(models) / run)
    result, weights = fit_linear_probe(
        train_x[ids],
        train_y[ids],
        test_x,
        test_y,
        c_grid=probe.c_grid,
        folds=probe.folds,
        fixed_c=probe.fixed_c,
        max_iter=probe.max_iter,
    )
    with output_set(Path(out) / run / "linear.json", Path(models) / run / "probe.npz") as (
        scores_json,
        probe_npz,
    ):
        write_json(scores_json, result | {"versions": library_versions()})
        weights.save(probe_npz)
    how = f"{result['folds']}-fold CV" if result["selected_by"] == "cv" else "fixed: a class has one image"
    done(
        f"{run}: linear probe accuracy {result['accuracy']:.4f} (C={result['C']:g}, {how}) "
        f"-> {out}/{run}/linear.json, {models}/{run}/probe.npz"
    )


if __name__ == "__main__":
    # One OpenBLAS thread, set before NumPy starts its thread pools: the probe's fits run with one thread
    # anyway (semisup.evaluation.linear), and not starting the pools saves a part of this short process's
    # start-up. A value set by the user wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
