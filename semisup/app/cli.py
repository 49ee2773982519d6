"""The `semisup` command: what a person runs outside the DVC pipeline.

`semisup predict MODEL FOLDER` classifies new images with a run's model folder (alone) or a trained run;
`semisup plots-template` writes the offline page template of `dvc plots`; `semisup check-page PAGE` renders a
page offline in headless Chromium and says which plots it drew; `semisup compare REV_A REV_B` pairs two
revisions' runs and prints B - A per method x budget x score with its 95% interval and p. Like a stage
(stages/), this is where argv and params.yaml are read; it shares the stages' options
(semisup/process/options.py) and process runtime (semisup/process/runtime.py, installed by the group's entry:
user errors in one line, exit 2; Ctrl-C in one line, also when a finaliser swallowed it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from semisup.core.errors import UserError
from semisup.process import runtime
from semisup.process.options import load, params_option
from semisup.process.runtime import user_errors

if TYPE_CHECKING:
    from semisup.model.predict import Predictions


@click.group()
def main() -> None:
    """semisup: use and inspect the pipeline's results."""
    runtime.install()  # the command's entry: before any subcommand imports TensorFlow


@main.command()
@click.argument("model")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Default: predictions-RUN.csv.")
@click.option(
    "--probe",
    default="knn",
    show_default=True,
    type=click.Choice(["knn", "linear"]),
    help="knn: the vote of the run's labeled bank; linear: the run's linear probe (its linear stage's).",
)
@click.option(
    "--k",
    "k",
    default=None,
    type=click.IntRange(min=1),
    help="Neighbours that vote (default: knn.k's smallest, fitted to the bank as the knn stage fits it).",
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
    model: str,
    folder: Path,
    out: str | None,
    probe: str,
    k: int | None,
    vote: str,
    params_path: str,
    models: str,
    embeddings: str,
    splits: str,
    shards: str,
) -> None:
    """Classify the images under FOLDER with MODEL: a model folder (models/<run>/ or a copy of it, alone) or
    a run of this repository (method-budget-seed, e.g. paws-all-0). Writes a CSV of file, predicted class
    and confidence (kNN: the winning class's share of the vote; linear: the probe's probability)."""
    from semisup.core.io import atomic_path, probe_writable
    from semisup.model.predict import write_predictions

    # What a user can get wrong is checked first, before TensorFlow loads.
    use = _model(model, params_path, Path(models), Path(embeddings), Path(splits), Path(shards))
    paths = _image_files(folder)
    out_path = Path(out or f"predictions-{use.run}.csv")
    probe_writable(out_path.parent)
    k = _check_k(k or use.k, use) if probe == "knn" else k or use.k
    classify = _linear(use) if probe == "linear" else _knn(use, k, vote == "weighted")
    started = time.monotonic()
    found = _classify_files(use, paths, classify)
    seconds = time.monotonic() - started
    with atomic_path(out_path) as tmp:
        write_predictions(tmp, folder, found, use.class_names)
    skipped = f", {len(found.skipped)} unreadable skipped" if found.skipped else ""
    how = "linear probe" if probe == "linear" else f"{vote} {k}-NN vote"
    click.echo(
        f"predict {use.run}: {len(found.files)} images{skipped} in {seconds:.1f} s "
        f"({len(found.files) / max(seconds, 1e-9):.0f} images/s), {how} -> {out_path}"
    )


def _model(
    model: str, params_path: str, models: Path, embeddings: Path, splits: Path, shards: Path
) -> _Model:
    """MODEL as predict reads it: a model folder (alone), or a run of this repository."""
    from semisup.model.modelcard import is_model_folder

    if is_model_folder(model) or Path(model).is_dir():
        return _from_folder(Path(model))
    return _from_run(model, params_path, models, embeddings, splits, shards)


def _check_k(k: int, use: _Model) -> int:
    """k, refused in one line when the run's bank holds fewer labeled images."""
    if k > len(use.bank_labels):
        raise UserError(
            f"--k {k}: the bank of {use.run} holds {len(use.bank_labels)} labeled images; use k <= that"
        )
    return k


def _classify_files(use: _Model, paths: list[Path], classify: Callable) -> Predictions:
    """Embed and classify every file with the run's encoder, a safe point for Ctrl-C after every chunk."""
    from semisup.model.embed import embed
    from semisup.model.encoder import load_encoder
    from semisup.model.predict import predict_folder

    encoder = load_encoder(use.encoder, image_shape=use.image_shape, rerun=use.rerun)

    def embed_chunk(images: np.ndarray) -> np.ndarray:  # (B, S, S, 3) uint8 -> (B, D)
        runtime.checkpoint()
        return embed(encoder, [(images, np.zeros(len(images), np.int64))])[0]

    return predict_folder(
        paths,
        embed=embed_chunk,
        vote=classify,
        image_size=use.image_shape[0],
        max_pixels=use.max_pixels,
        on_bad_image=use.on_bad_image,
        chunk=use.batch_size,
    )


@dataclass(frozen=True)
class _Model:
    """What predict needs of a run, from its model folder or from the repository's files."""

    run: str
    encoder: Path
    probe: Path
    image_shape: tuple[int, int, int]
    class_names: list[str]
    bank: np.ndarray  # (N, D) float32
    bank_labels: np.ndarray  # (N,) int64
    k: int
    temperature: float
    query_chunk: int
    max_pixels: int | None
    on_bad_image: str
    batch_size: int
    rerun: str


def _from_folder(path: Path) -> _Model:
    """A model folder alone: its card's settings, no params.yaml and no data/."""
    from semisup.model.modelcard import read_model_folder

    found = read_model_folder(path)
    knn = found.card["settings"]["knn"]
    return _Model(
        run=found.card["run"],
        encoder=found.encoder,
        probe=found.probe,
        image_shape=found.image_shape,
        class_names=found.class_names,
        bank=found.bank_features,
        bank_labels=found.bank_labels,
        k=_smallest_k(knn["k"], found.bank_labels, len(found.class_names)),
        temperature=knn["temperature"],
        query_chunk=knn["query_chunk"],
        max_pixels=found.setting("data", "max_pixels"),
        on_bad_image=found.setting("data", "on_bad_image"),
        batch_size=found.setting("embed", "batch_size"),
        rerun=f"copy {path} again from its repository",
    )


def _from_run(
    run: str, params_path: str, models: Path, embeddings: Path, splits: Path, shards: Path
) -> _Model:
    """A run of this repository: params.yaml's settings, the run's embeddings, subset and the shards."""
    from semisup.data.subsets import parse_run, run_subset_path
    from semisup.evaluation.embeddings import load_class_names

    params = load(params_path)
    params.method(parse_run(run).method)
    subset = run_subset_path(splits, run)
    encoder = models / run / "encoder.keras"
    if not encoder.is_file():
        raise UserError(f"run {run!r}: no {encoder}; {_runs_here(models)}")
    bank, bank_labels = _bank(embeddings / run / "labeled.npz", subset, run)
    class_names = load_class_names(shards)
    return _Model(
        run=run,
        encoder=encoder,
        probe=models / run / "probe.npz",
        image_shape=_image_shape(shards),
        class_names=class_names,
        bank=bank,
        bank_labels=bank_labels,
        k=_smallest_k(params.knn.k, bank_labels, len(class_names)),
        temperature=params.knn.temperature,
        query_chunk=params.knn.query_chunk,
        max_pixels=params.data.max_pixels,
        on_bad_image=params.data.on_bad_image,
        batch_size=params.embed.batch_size,
        rerun=f"rerun `dvc repro -f pretrain@{run}`",
    )


def _smallest_k(ks: list[int] | tuple[int, ...], bank_labels: np.ndarray, num_classes: int) -> int:
    """The knn stage's smallest k for this bank: knn.k's smallest, fitted to the bank as the stage fits it
    (semisup.training.few_labels.fit_k), so that predict votes as the knn stage scored."""
    from semisup.data.splits import class_counts
    from semisup.training.few_labels import fit_k

    return min(fit_k(ks, class_counts(bank_labels, num_classes))[0])


def _knn(use: _Model, k: int, weighted: bool) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Features (B, D) -> the kNN vote's classes (B,) and the winner's share (B,), as the knn stage votes."""
    from semisup.evaluation.knn import knn_vote

    return lambda features: knn_vote(
        use.bank,
        use.bank_labels,
        features,
        k=k,
        num_classes=len(use.class_names),
        weighted=weighted,
        temperature=use.temperature,
        query_chunk=use.query_chunk,
    )


def _linear(use: _Model) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Features (B, D) -> the run's linear probe's classes (B,) and probabilities (B,)."""
    from semisup.evaluation.linear import ProbeWeights

    if not use.probe.is_file():
        raise UserError(f"{use.probe}: not found; run `dvc repro linear@{use.run}` (it saves the probe)")
    return ProbeWeights.load(use.probe, f"rerun `dvc repro -f linear@{use.run}`").predict


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
    from semisup.evaluation.embeddings import load_embeddings

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
    from semisup.core.io import write_text
    from semisup.reporting.vega_page import TEMPLATE, build, versions

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
    from semisup.reporting.pagecheck import check_page as render
    from semisup.reporting.pagecheck import network_urls

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
    from semisup.core.io import probe_writable, write_text
    from semisup.reporting.compare import compare as pair_up
    from semisup.reporting.compare import format_markdown, format_text, read_revision

    if out:
        probe_writable(Path(out).parent)
    found = pair_up(read_revision(repo, rev_a), read_revision(repo, rev_b))
    click.echo(format_markdown(found) if as_markdown else format_text(found), nl=False)
    if out:
        write_text(out, format_markdown(found))
        click.echo(f"-> {out}")


if __name__ == "__main__":
    main()
