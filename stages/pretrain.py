"""pretrain@M: train one method's encoder with the reference recipe; resumes after a crash."""

from __future__ import annotations

import dataclasses
import logging

import click

from semisup.data.subsets import parse_budget, read_subset, run_name
from stages.common import load, params_option, user_errors


@click.command()
@click.option("--method", required=True, help="Method name (see method_names in params.yaml).")
@params_option
@click.option("--shards", default="data/shards", show_default=True, help="Shard directory.")
@click.option("--models", default="models", show_default=True, help="Writes <models>/<method>/encoder.keras.")
@click.option("--metrics", default="metrics", show_default=True, help="Writes <metrics>/<method>/train/.")
@click.option(
    "--checkpoints",
    default=".checkpoints",
    show_default=True,
    help="Per-epoch checkpoints, outside DVC's outputs so a killed run resumes.",
)
@click.option("--budget", default=None, help="Study run: labels per class (or all); names the run.")
@click.option("--seed", "run_seed", default=None, type=click.IntRange(min=0), help="Study run: its seed.")
@click.option("--split", default=None, type=click.Path(dir_okay=False), help="Study run: its labeled subset.")
@user_errors
def main(
    method: str,
    params_path: str,
    shards: str,
    models: str,
    metrics: str,
    checkpoints: str,
    budget: str | None,
    run_seed: int | None,
    split: str | None,
) -> None:
    """Pretrain METHOD's encoder on the shards (one study run with --budget/--seed/--split)."""
    params = load(params_path)
    params.method(method)  # an unknown method name fails here, before TensorFlow starts
    # A study run (method, budget, seed) trains with its seed and its labeled subset, under its own name.
    name = method if budget is None and run_seed is None else run_name(method, budget, run_seed)
    if budget is not None:
        parse_budget(budget)
    if run_seed is not None:
        params = dataclasses.replace(params, seed=run_seed)
    labeled_ids = read_subset(split) if split else None
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from semisup.pretrain import pretrain

    history = pretrain(
        method,
        params,
        shard_dir=shards,
        model_dir=f"{models}/{name}",
        metrics_dir=f"{metrics}/{name}",
        checkpoint_root=checkpoints if name == method else f"{checkpoints}/{name}",
        labeled_ids=None if labeled_ids is None else [int(i) for i in labeled_ids],
    )
    click.echo(f"{name}: trained {len(history)} epochs -> {models}/{name}/encoder.keras")


if __name__ == "__main__":
    main()
