"""Stage splits@<budget>-<seed>: the labeled subset of one (budget, seed), shared by every method's run.

Writes data/splits/<budget>-<seed>.json: record ids (positions in the labeled split's manifest order),
class-stratified, nested across budgets of one seed (see semisup/data/subsets.py).
"""

from __future__ import annotations

import click

from semisup.data.subsets import (
    check_budget,
    draw_subset,
    labeled_split_labels,
    parse_budget,
    subset_path,
    write_subset,
)
from semisup.preflight import check_outputs
from stages.common import user_errors
from stages.console import done


@click.command()
@click.option("--budget", required=True, help="Labels per class, or all (the whole labeled split).")
@click.option("--seed", required=True, type=click.IntRange(min=0), help="The run seed that draws the subset.")
@click.option("--shards", default="data/shards", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="data/splits", show_default=True, type=click.Path(file_okay=False))
@user_errors
def main(budget: str, seed: int, shards: str, out: str) -> None:
    """Write the (BUDGET, SEED) labeled subset as a file of record ids."""
    per_class = parse_budget(budget)
    labels, manifest = labeled_split_labels(shards)
    names = [str(n) for n in manifest["class_names"]]
    check_budget(labels, names, per_class)
    ids = draw_subset(labels, len(names), per_class, seed)
    path = subset_path(out, budget, seed)
    check_outputs(path.parent)
    write_subset(path, ids, labels, budget=per_class, seed=seed, num_classes=len(names))
    done(f"{path}: {len(ids)} of {len(labels)} labeled images ({budget} per class, seed {seed})")


if __name__ == "__main__":
    main()
