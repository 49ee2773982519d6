"""embed@M: run the saved encoder (no augmentation, only [0,1] scaling) over the labeled and test splits."""

from __future__ import annotations

from pathlib import Path

import click

from semisup.config import resolve_run
from semisup.data.subsets import parse_run
from stages.common import checkpoint, load, params_option, run_option, user_errors
from stages.console import done


@click.command()
@run_option
@params_option
@click.option(
    "--shards",
    default="data/shards",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Shard directory.",
)
@click.option(
    "--models",
    default="models",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Reads <models>/<run>/encoder.keras.",
)
@click.option(
    "--out",
    default="data/embeddings",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Writes <out>/<run>/{labeled,test}.npz.",
)
@user_errors
def main(run: str, params_path: str, shards: str, models: str, out: str) -> None:
    """Write the run's embeddings of the labeled and test splits."""
    method, budget, seed = parse_run(run)
    spec = resolve_run(
        load(params_path), method, run=run, seed=seed, budget=budget
    )  # (an unknown one: one line)
    name = run

    from semisup.model.embed import embed_splits

    counts = embed_splits(
        Path(models) / name / "encoder.keras",
        shards,
        Path(out) / name,
        batch_size=spec.params.embed.batch_size,
        rerun=f"rerun `dvc repro -f pretrain@{name}`",
        on_batch=checkpoint,  # Ctrl-C that a finaliser swallowed stops it at the next batch
    )
    done(
        f"{name}: embedded " + ", ".join(f"{n} {split}" for split, n in counts.items()) + f" -> {out}/{name}"
    )


if __name__ == "__main__":
    main()
