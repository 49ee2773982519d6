"""model@M-B-S: assemble the run's model folder, models/<run>/, so that it can be used without the repository.

pretrain wrote models/<run>/encoder.keras and linear models/<run>/probe.npz; this stage adds bank.npz (the
embeddings and labels of the run's labeled subset: the bank its knn stage votes with), classes.json and the
model card (card.json, card.md). See semisup/model/modelcard.py and docs/models.md.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from semisup.config import RunSpec, resolve_run
from semisup.core.errors import DataError, UserError
from semisup.core.io import output_set, write_json, write_npz, write_text
from semisup.core.versions import library_versions
from semisup.data.subsets import budget_name, parse_run, read_subset
from semisup.evaluation.embeddings import check_labels, load_class_names, load_embeddings
from semisup.model.modelcard import (
    BANK,
    CARD,
    CLASSES,
    ENCODER,
    FORMAT,
    PAGE,
    PROBE,
    bank_arrays,
    card_markdown,
    class_counts,
    sha256_of,
    study_entry,
)
from semisup.training.preflight import check_outputs
from stages.common import load, params_option, run_option, user_errors
from stages.console import done

SECTIONS = ("data", "train", "augment", "encoder", "embed", "knn", "linear")  # the settings a card records


def read_json(path: Path, stage: str) -> Any:
    """A JSON output of an earlier stage; a UserError naming it and the stage to run when it is missing."""
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run `dvc repro {stage}` first)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); rerun `dvc repro -f {stage}`") from None


def settings(spec: RunSpec) -> dict[str, Any]:
    """The params sections the run ran with (a configuration's overrides applied), as plain JSON values."""
    params = spec.params
    out = {section: dataclasses.asdict(getattr(params, section)) for section in SECTIONS}
    return out | {"seed": params.seed, "method": dataclasses.asdict(spec.method_params)}


def code_digests(code: Path, method: str) -> dict[str, str]:
    """{stage: sha256 of its code's digest file} for the stages that made the folder, as the code stage
    wrote them when the card was assembled (the model stage depends on its own digest only, as every stage:
    a change of another stage's code reaches the card when it changes that stage's outputs)."""
    names = {"pretrain": f"pretrain-{method}.json", "embed": "embed.json", "knn": "knn.json"}
    names |= {"linear": "linear.json", "model": "model.json"}
    out = {}
    for stage, name in names.items():
        if not (code / name).is_file():
            raise UserError(f"{code / name}: not found (run `dvc repro code` first)")
        out[stage] = sha256_of(code / name)
    return out


@click.command()
@run_option
@click.option(
    "--split", required=True, type=click.Path(dir_okay=False), help="The run's labeled subset file."
)
@params_option
@click.option("--models", default="models", show_default=True, type=click.Path(file_okay=False))
@click.option("--embeddings", default="data/embeddings", show_default=True, type=click.Path(file_okay=False))
@click.option("--shards", default="data/shards", show_default=True, type=click.Path(file_okay=False))
@click.option("--runs", default="metrics/runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--summary", default="metrics/summary.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--code", default="data/code", show_default=True, type=click.Path(file_okay=False))
@user_errors
def main(
    run: str,
    split: str,
    params_path: str,
    models: str,
    embeddings: str,
    shards: str,
    runs: str,
    summary: str,
    code: str,
) -> None:
    """Write RUN's labeled bank, class names and model card into its model folder."""
    method, budget, seed = parse_run(run)
    # The run resolved once. Its params keep params.yaml's seed, as the card's settings record them; the
    # card's seed is the run's.
    spec = resolve_run(load(params_path), method, run=run, budget=budget)
    folder = Path(models) / run
    for name, stage in ((ENCODER, "pretrain"), (PROBE, "linear")):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: not found (run `dvc repro {stage}@{run}` first)")
    names = load_class_names(Path(shards))
    labeled = Path(embeddings) / run / "labeled.npz"
    features, labels = load_embeddings(labeled, run)
    check_labels(labeled, features, labels, len(names), run)
    ids = read_subset(split, num_labeled=len(labels))
    features, labels = features[ids], labels[ids]
    where = {"shards": Path(shards), "split": Path(split), "runs": Path(runs) / run, "code": Path(code)}
    card = build_card(spec, seed, where, read_json(Path(summary), "report"), folder, names, labels)
    check_outputs(folder)
    with output_set(*(folder / n for n in (BANK, CLASSES, CARD, PAGE))) as (bank, classes, card_json, page):
        write_npz(bank, bank_arrays(features, labels))
        write_json(classes, names)
        write_json(card_json, card)
        write_text(page, card_markdown(card))
    done(f"{run}: model folder -> {folder}/ ({len(labels)} images in its bank)")


def build_card(
    spec: RunSpec,
    seed: int | None,
    where: dict[str, Path],
    summary: dict,
    folder: Path,
    names: list[str],
    labels: np.ndarray,
) -> dict[str, Any]:
    """card.json's fields for the run `spec` of seed `seed` (None: params.yaml's): `where` names its shards,
    subset file, metrics/runs/<run> and data/code; labels (N,): its bank's."""
    run, method, budget, params = spec.run, spec.name, spec.budget, spec.params
    seed = params.seed if seed is None else seed
    runs = where["runs"]
    return {
        "format": FORMAT,
        "run": run,
        "method": method,
        "runs_method": spec.method.name,
        "labels_per_class": "all" if budget is None else budget,
        "seed": seed,
        "image_shape": read_json(where["shards"] / "manifest.json", "shard")["image_shape"],
        "classes": names,
        "bank": {"images": int(len(labels)), "per_class": class_counts(labels, names)},
        "settings": settings(spec),
        "data": _data(params, where["shards"], where["split"]),
        "code": code_digests(where["code"], method),
        "versions": _versions(runs),
        "scores": {
            "knn": _without_versions(read_json(runs / "knn.json", f"knn@{run}")),
            "linear": _without_versions(read_json(runs / "linear.json", f"linear@{run}")),
        },
        "study": study_entry(summary, method, budget_name(budget or "all"), seed),
        "files": {ENCODER: sha256_of(folder / ENCODER), PROBE: sha256_of(folder / PROBE)},
    }


def _without_versions(scores: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in scores.items() if key != "versions"}


def _data(params: Any, shards: Path, split: Path) -> dict[str, Any]:
    """Where the run's images came from: the source, and the sha256 of the shard manifest (which holds each
    shard's sha256) and of the labeled subset's file."""
    return {
        "source": params.data.source,
        "path": params.data.path,
        "manifest_sha256": sha256_of(shards / "manifest.json"),
        "subset": split.name,
        "subset_sha256": sha256_of(split),
    }


def _versions(run_dir: Path) -> dict[str, Any]:
    """The library versions of each stage that computed the folder (as each recorded them), and this one's."""
    out = {}
    for stage, path in (("pretrain", run_dir / "train" / "versions.json"),):
        out[stage] = json.loads(path.read_text()) if path.is_file() else None
    for stage in ("knn", "linear"):
        path = run_dir / f"{stage}.json"
        out[stage] = json.loads(path.read_text()).get("versions") if path.is_file() else None
    return out | {"model": library_versions()}


if __name__ == "__main__":
    main()
