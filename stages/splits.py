"""Stage splits@<budget>-<seed>: the labeled subset of one (budget, seed), shared by every method's run.

Writes data/splits/<budget>-<seed>.json: record ids (positions in the labeled split's manifest order),
class-stratified, nested across budgets of one seed (see semisup/data/subsets.py).
"""

from __future__ import annotations

import click

from semisup.core.errors import UserError
from semisup.data.subsets import (
    check_budget,
    draw_subset,
    labeled_split_labels,
    parse_budget,
    subset_path,
    write_subset,
)
from semisup.training.preflight import check_outputs
from stages.common import load, params_option, user_errors
from stages.console import done


@click.command()
# Budget and seed are read after params.yaml is validated, so that a bad study list (`--seed 1.5` from
# study.seeds: [1.5]) is named by its key, not as a bad option: their click type is text, shown as what it holds.
@click.option(
    "--budget",
    required=True,
    metavar="INTEGER|all",
    help="Labels per class, or all (the whole labeled split).",
)
@click.option(
    "--seed", required=True, metavar="INTEGER", help="The run seed that draws the subset (an integer >= 0)."
)
@click.option("--shards", default="data/shards", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="data/splits", show_default=True, type=click.Path(file_okay=False))
@params_option
@user_errors
def main(budget: str, seed: str, shards: str, out: str, params_path: str) -> None:
    """Write the (BUDGET, SEED) labeled subset as a file of record ids."""
    # The subset depends on its budget and seed alone, so params.yaml is not a dependency of this stage; it
    # is still validated here, as by every stage: this is the first stage of each run, and a mistake in
    # `study` (or anywhere else) must stop the repro with the key's name before anything is written.
    load(params_path)
    per_class = parse_budget(budget)
    if not (seed.isascii() and seed.isdigit()):
        raise UserError(f"--seed: {seed!r} is not an integer >= 0 (the seeds come from study.seeds)")
    seed = int(seed)
    labels, manifest = labeled_split_labels(shards)
    names = [str(n) for n in manifest["class_names"]]
    check_budget(labels, names, per_class)
    ids = draw_subset(labels, len(names), per_class, seed)
    path = subset_path(out, budget, seed)
    check_outputs(path.parent)
    write_subset(path, ids, labels, budget=per_class, seed=seed, num_classes=len(names))
    done(f"{path}: {len(ids)} of {len(labels)} labeled images ({per_class or 'all'} per class, seed {seed})")


if __name__ == "__main__":
    main()
