"""The `semisup` command: what a person runs outside the DVC pipeline.

`semisup predict RUN FOLDER` classifies new images with a trained run; `semisup plots-template` writes the
offline page template of `dvc plots`; `semisup check-page PAGE` renders a page offline in headless
Chromium and says which plots it drew; `semisup compare REV_A REV_B` pairs two revisions' runs and prints
B - A per method x budget x score with its 95% interval and p. Like a stage (stages/), this is where argv and params.yaml are read;
it shares the stages' handling of user errors (one line, exit 2).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from semisup.errors import UserError
from stages.common import load, params_option, user_errors


@click.group()
def main() -> None:
    """semisup: use and inspect the pipeline's results."""


@main.command()
@click.argument("run")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Default: predictions-RUN.csv.")
@click.option(
    "--k",
    "k",
    default=None,
    type=click.IntRange(min=1),
    help="Neighbours that vote (default: knn.k's smallest).",
)
@click.option(
    "--vote",
    default="weighted",
    show_default=True,
    type=click.Choice(["weighted", "plain"]),
    help="weighted: exp(sim/T) votes (knn.temperature); plain: one vote per neighbour.",
)
@params_option
@click.option("--models", default="models", show_default=True, type=click.Path(file_okay=False))
@click.option("--embeddings", default="data/embeddings", show_default=True, type=click.Path(file_okay=False))
@click.option("--splits", default="data/splits", show_default=True, type=click.Path(file_okay=False))
@click.option("--shards", default="data/shards", show_default=True, type=click.Path(file_okay=False))
@user_errors
def predict(
    run: str,
    folder: Path,
    out: str | None,
    k: int | None,
    vote: str,
    params_path: str,
    models: str,
    embeddings: str,
    splits: str,
    shards: str,
) -> None:
    """Classify the images under FOLDER with RUN (method-budget-seed, e.g. paws-all-0): a CSV of file,
    predicted class and confidence (the winning class's share of the kNN vote of the run's labeled bank)."""
    from semisup.data.subsets import parse_run, run_subset_path
    from semisup.io import atomic_path, probe_writable
    from semisup.predict import predict_folder, write_predictions

    # What a user can get wrong is checked first, before TensorFlow loads.
    params = load(params_path)
    params.method(parse_run(run).method)
    subset = run_subset_path(splits, run)
    encoder_path = Path(models) / run / "encoder.keras"
    if not encoder_path.is_file():
        raise UserError(f"run {run!r}: no {encoder_path}; {_runs_here(Path(models))}")
    paths = _image_files(folder)
    out_path = Path(out or f"predictions-{run}.csv")
    probe_writable(out_path.parent)

    from semisup.embed import embed
    from semisup.encoder import load_encoder
    from semisup.knn import knn_vote
    from stages.knn import load_class_names

    names = load_class_names(Path(shards))
    bank, bank_labels = _bank(Path(embeddings) / run / "labeled.npz", subset, run)
    k = k or min(params.knn.k)
    if k > len(bank_labels):
        raise UserError(f"--k {k}: the bank of {run} holds {len(bank_labels)} labeled images; use k <= that")
    shape = _image_shape(Path(shards))
    encoder = load_encoder(encoder_path, image_shape=shape, rerun=f"rerun `dvc repro -f pretrain@{run}`")
    started = time.monotonic()
    found = predict_folder(
        paths,
        embed=lambda images: embed(encoder, [(images, np.zeros(len(images), np.int64))])[0],
        vote=lambda features: knn_vote(
            bank,
            bank_labels,
            features,
            k=k,
            num_classes=len(names),
            weighted=vote == "weighted",
            temperature=params.knn.temperature,
            query_chunk=params.knn.query_chunk,
        ),
        image_size=shape[0],
        max_pixels=params.data.max_pixels,
        on_bad_image=params.data.on_bad_image,
        chunk=params.embed.batch_size,
    )
    seconds = time.monotonic() - started
    with atomic_path(out_path) as tmp:
        write_predictions(tmp, folder, found, names)
    skipped = f", {len(found.skipped)} unreadable skipped" if found.skipped else ""
    click.echo(
        f"predict {run}: {len(found.files)} images{skipped} in {seconds:.1f} s "
        f"({len(found.files) / max(seconds, 1e-9):.0f} images/s), {vote} {k}-NN vote -> {out_path}"
    )


def _image_files(folder: Path) -> list[Path]:
    """The PNG and JPEG files under `folder`; a UserError when it is not a folder or holds none."""
    from semisup.data.folder import image_files

    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; give a folder of PNG or JPEG images")
    paths = image_files(folder)
    if not paths:
        raise UserError(f"{folder}: no PNG or JPEG images in it or its sub-folders; give a folder of images")
    return paths


def _bank(labeled: Path, subset: Path | None, run: str) -> tuple[np.ndarray, np.ndarray]:
    """The run's labeled bank, as its knn stage builds it: features (N, D) and labels (N,) of its subset
    (every labeled image for a run named by its method alone)."""
    from semisup.data.subsets import read_subset
    from stages.knn import load_embeddings

    features, labels = load_embeddings(labeled, run)
    if subset is None:
        return features, labels
    ids = read_subset(subset, num_labeled=len(labels))
    return features[ids], labels[ids]


def _runs_here(models: Path) -> str:
    """Which runs have a saved encoder under `models`, for an error message."""
    runs = (
        sorted(p.name for p in models.glob("*") if (p / "encoder.keras").is_file()) if models.is_dir() else []
    )
    if not runs:
        return f"no trained run under {models}/ (train one: dvc repro, or `dvc exp apply <experiment>`)"
    return f"trained runs here: {', '.join(runs)}"


def _image_shape(shards: Path) -> tuple[int, int, int]:
    """The (H, W, 3) of the images the run's encoder was trained on, from the shard manifest."""
    try:
        return tuple(json.loads((shards / "manifest.json").read_text())["image_shape"])
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{shards}/manifest.json: unreadable ({exc}); run `dvc repro shard`") from None


@main.command("plots-template")
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Default: .dvc/plots/offline.html."
)
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from a fresh build; write nothing.")
@user_errors
def plots_template(out: str | None, check: bool) -> None:
    """Write the page template of `dvc plots show` with the Vega libraries inline (offline)."""
    from semisup.io import write_text
    from semisup.vega_page import TEMPLATE, build, versions

    path = Path(out) if out else TEMPLATE
    text = build()
    if check:
        same = path.exists() and path.read_text(encoding="utf8") == text
        click.echo(f"{path}: {'up to date' if same else 'differs from a fresh build'}")
        raise SystemExit(0 if same else 1)
    write_text(path, text)
    origin = ", ".join(f"{k} {v}" for k, v in versions().items())
    click.echo(f"{path}: {len(text.encode()) / 2**20:.2f} MiB, from {origin}")


@main.command("check-page")
@click.argument("pages", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@user_errors
def check_page(pages: tuple[str, ...]) -> None:
    """Render PAGES offline in headless Chromium; print every plot and whether it was drawn."""
    from semisup.pagecheck import check_page as render
    from semisup.pagecheck import network_urls

    failed = False
    for page in pages:
        urls = network_urls(Path(page).read_text(encoding="utf8"))
        plots = render(page)
        blank = [p for p in plots if not p.drawn]
        failed |= bool(urls or blank or not plots)
        click.echo(
            f"{page}: {len(plots) - len(blank)} of {len(plots)} plots drawn offline "
            f"({sum(p.kind == 'vega' for p in plots)} Vega, {sum(p.kind == 'img' for p in plots)} images), "
            f"{len(urls)} network URLs"
        )
        for p in blank:
            click.echo(f"  blank: {p.kind} {p.name}")
        for url in urls:
            click.echo(f"  network: {url}")
    raise SystemExit(1 if failed else 0)


@main.command("compare")
@click.argument("rev_a")
@click.argument("rev_b")
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False), help="The project.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print Markdown (for a pull request).")
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Also write the Markdown to this file."
)
@user_errors
def compare(rev_a: str, rev_b: str, repo: str, as_markdown: bool, out: str | None) -> None:
    """Did B help over A? Pair the runs of revisions REV_A and REV_B (commits, branches, tags or DVC
    experiments) by method, budget and seed; print B - A per method x budget x score, its 95% t-interval
    and p, and the runs without a partner. Exit 0 whatever the result."""
    from semisup.compare import compare as pair_up
    from semisup.compare import format_markdown, format_text, read_revision
    from semisup.io import probe_writable, write_text

    if out:
        probe_writable(Path(out).parent)
    found = pair_up(read_revision(repo, rev_a), read_revision(repo, rev_b))
    click.echo(format_markdown(found) if as_markdown else format_text(found), nl=False)
    if out:
        write_text(out, format_markdown(found))
        click.echo(f"-> {out}")


if __name__ == "__main__":
    main()
