"""embed@M: run the saved encoder (no augmentation, only [0,1] scaling) over the labeled and test splits."""

from __future__ import annotations

from pathlib import Path

import click

from stages.common import load, params_option, user_errors
from stages.console import done


@click.command()
@click.option("--method", required=True, help="Method name (see method_names in params.yaml).")
@params_option
@click.option("--shards", default="data/shards", show_default=True, help="Shard directory.")
@click.option("--models", default="models", show_default=True, help="Reads <models>/<method>/encoder.keras.")
@click.option(
    "--out", default="data/embeddings", show_default=True, help="Writes <out>/<method>/{labeled,test}.npz."
)
@click.option("--run", default=None, help="Study run (method-budget-seed): reads and writes under its name.")
@user_errors
def main(method: str, params_path: str, shards: str, models: str, out: str, run: str | None) -> None:
    """Write METHOD's embeddings of the labeled and test splits."""
    params = load(params_path)
    params.method(method)
    name = run or method

    from semisup.embed import embed_splits

    counts = embed_splits(
        Path(models) / name / "encoder.keras",
        shards,
        Path(out) / name,
        batch_size=params.embed.batch_size,
        rerun=f"rerun `dvc repro -f pretrain@{name}`",
    )
    done(
        f"{name}: embedded " + ", ".join(f"{n} {split}" for split, n in counts.items()) + f" -> {out}/{name}"
    )


if __name__ == "__main__":
    main()
