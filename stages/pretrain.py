"""pretrain@M: train one method's encoder with the reference recipe; resumes after a crash."""

from __future__ import annotations

import logging

import click

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
@user_errors
def main(method: str, params_path: str, shards: str, models: str, metrics: str, checkpoints: str) -> None:
    """Pretrain METHOD's encoder on the shards."""
    params = load(params_path)
    params.method(method)  # an unknown method name fails here, before TensorFlow starts
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from semisup.preflight import check_pretrain

    # Everything that can fail before training fails here: manifest, knn.k, writable folders, free disk.
    check_pretrain(params, method, shards, f"{models}/{method}", f"{metrics}/{method}", checkpoints)

    from semisup.pretrain import pretrain

    history = pretrain(
        method,
        params,
        shard_dir=shards,
        model_dir=f"{models}/{method}",
        metrics_dir=f"{metrics}/{method}",
        checkpoint_root=checkpoints,
    )
    click.echo(f"{method}: trained {len(history)} epochs -> {models}/{method}/encoder.keras")


if __name__ == "__main__":
    main()
