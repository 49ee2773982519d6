"""Stage maps: a 2-D t-SNE map of the test embeddings of every method x budget (see
semisup/evaluation/maps.py).

For each method of method_names and budget of study.labeled_per_class, the run of the study's first seed:
reads data/embeddings/<run>/test.npz, writes metrics/maps/<run>.csv (x, y, label: the class id) for the
report page. Its own cached stage, so a change of the report alone does not compute the maps again.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from stages.common import load, params_option, user_errors
from stages.console import done


@click.command()
@params_option
@click.option("--embeddings", default="data/embeddings", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="metrics/maps", show_default=True, type=click.Path(file_okay=False))
@user_errors
def main(params_path: str, embeddings: str, out: str) -> None:
    """Map the test embeddings of each method x budget (first seed) to 2-D with t-SNE."""
    from semisup.core.io import output_set
    from semisup.data.subsets import budget_name, run_name
    from semisup.evaluation.linear import load_npz
    from semisup.evaluation.maps import sample_ids, tsne_map
    from semisup.reporting.report import write_csv
    from semisup.training.preflight import check_outputs

    params = load(params_path)
    seed = params.study.seeds[0]
    runs = [
        run_name(m, budget_name(b), seed) for m in params.method_names for b in params.study.labeled_per_class
    ]
    tests = {run: load_npz(Path(embeddings) / run / "test.npz", f"embed@{run}") for run in runs}
    check_outputs(out)
    with output_set(out) as (tmp,):
        tmp.mkdir()
        for run, (features, labels) in tests.items():
            ids = sample_ids(len(labels))
            xy = tsne_map(features[ids])
            rows = [
                {"x": f"{x:.4f}", "y": f"{y:.4f}", "label": int(c)}
                for (x, y), c in zip(xy, labels[ids], strict=True)
            ]
            write_csv(tmp / f"{run}.csv", rows, ["x", "y", "label"])
    done(f"maps: {len(runs)} t-SNE maps of the test embeddings -> {out}/")


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
