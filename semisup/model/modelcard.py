"""A run's model folder, models/<run>/: everything needed to use the run without the repository's data.

encoder.keras (pretrain), probe.npz (linear), and what the model stage adds: bank.npz (the embeddings and
labels of the run's labeled subset, the kNN vote's bank), classes.json (class names in class-id order) and
the model card, card.json and card.md (method and settings, data and code digests, library versions,
scores, the study's intervals). `read_model_folder` loads one for `semisup predict MODEL_DIR`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semisup.core.errors import DataError, UserError

FORMAT = "semisup model folder 1"
ENCODER, PROBE, BANK, CLASSES, CARD, PAGE = (
    "encoder.keras",
    "probe.npz",
    "bank.npz",
    "classes.json",
    "card.json",
    "card.md",
)
FILES = (ENCODER, PROBE, BANK, CLASSES, CARD, PAGE)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def study_entry(summary: Mapping[str, Any], method: str, budget: str, seed: int) -> dict[str, Any] | None:
    """The study's statistics of the run's method x budget over its seeds (mean, std, n, 95% t-interval per
    score, and whether the method is distinguishable from the best one); None when the run is not one of
    the study's (another method, budget or seed)."""
    if (
        method not in summary.get("methods", ())
        or budget not in summary.get("budgets", ())
        or seed not in summary.get("seeds", ())
    ):
        return None
    results = summary["results"][method][budget]
    scores = {}
    for metric, stats in results.items():
        comparison = summary["comparisons"][budget][metric]
        versus = comparison["vs_best"][method]
        scores[metric] = dict(stats) | {
            "best_method": comparison["best"],
            "indistinguishable_from_best": versus["indistinguishable_from_best"],
            "p_value_vs_best": versus["p_value"],
        }
    return {"seeds": list(summary["seeds"]), "confidence": summary["confidence"], "scores": scores}


def bank_arrays(features: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The bank file's arrays: features (N, D) float32, labels (N,) int64."""
    return {"features": np.asarray(features, np.float32), "labels": np.asarray(labels, np.int64)}


def card_markdown(card: Mapping[str, Any]) -> str:
    """card.md: a short page of the card for a person (the JSON holds everything)."""
    budget = card["labels_per_class"]
    lines = [
        f"# {card['run']}: {card['method']} ({card['runs_method']}), "
        f"{budget} labels per class, seed {card['seed']}",
        "",
        f"An encoder trained by semisup, with its labeled bank ({card['bank']['images']} images) and a "
        f"linear probe, on {card['data']['source']} images of {'x'.join(map(str, card['image_shape']))} "
        f"in {len(card['classes'])} classes: {', '.join(card['classes'])}.",
        "",
        "Use it: `semisup predict THIS_FOLDER IMAGES` (the kNN vote), or with `--probe linear`.",
        "",
        "| score | this run | its study: mean ± half-width of the 95% t-interval over seeds |",
        "|---|---|---|",
    ]
    study = (card.get("study") or {}).get("scores", {})
    for name, value in _headline(card["scores"]).items():
        stats = study.get(name)
        cell = "not in a study"
        if stats is not None and stats["half_width"] is None:
            cell = f"{stats['mean']:.4f} (one seed: no interval)"
        elif stats is not None:
            cell = f"{stats['mean']:.4f} ± {stats['half_width']:.4f} ({stats['n']} seeds)"
        lines.append(f"| {name} | {value:.4f} | {cell} |")
    versions = ", ".join(f"{k} {v}" for k, v in card["versions"]["model"].items())
    lines += [
        "",
        f"Data: manifest sha256 `{card['data']['manifest_sha256'][:16]}`, labeled subset sha256 "
        f"`{card['data']['subset_sha256'][:16]}`. Code: "
        + ", ".join(f"{stage} `{digest[:12]}`" for stage, digest in card["code"].items())
        + ".",
        "",
        f"Libraries: {versions}. Settings: every params section the run used is in card.json (`settings`).",
        "",
    ]
    return "\n".join(lines)


def _headline(scores: Mapping[str, Any]) -> dict[str, float]:
    """The run's scores named as the study names them: knn_k<k>, weighted_knn_k<k>, linear."""
    out = {}
    for key, entry in scores["knn"].items():
        out[f"knn_{key}"] = float(entry["accuracy"])
        out[f"weighted_knn_{key}"] = float(entry["weighted_accuracy"])
    out["linear"] = float(scores["linear"]["accuracy"])
    return out


@dataclass(frozen=True)
class ModelFolder:
    """A model folder read back: its card, class names, bank (features (N, D), labels (N,)) and files."""

    path: Path
    card: dict[str, Any]
    class_names: list[str]
    bank_features: np.ndarray
    bank_labels: np.ndarray

    @property
    def encoder(self) -> Path:
        return self.path / ENCODER

    @property
    def probe(self) -> Path:
        return self.path / PROBE

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.card["image_shape"])  # type: ignore[return-value]

    def setting(self, section: str, key: str) -> Any:
        """A setting the run ran with (card.json's settings.<section>.<key>)."""
        return self.card["settings"][section][key]


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` is a folder holding a model card (card.json)."""
    return (Path(path) / CARD).is_file()


def read_model_folder(path: str | Path) -> ModelFolder:
    """Read and check a model folder; a UserError naming the missing file, a DataError a broken one."""
    path = Path(path)
    missing = [name for name in (ENCODER, BANK, CLASSES, CARD) if not (path / name).is_file()]
    if missing:
        raise UserError(
            f"{path}: not a complete model folder (no {', '.join(missing)}); copy the whole folder "
            "models/<run>/ (or `dvc artifacts get REPO <run>`)"
        )
    card = _read_json(path / CARD)
    names = _read_json(path / CLASSES)
    if card.get("format") != FORMAT or not isinstance(names, list):
        raise DataError(f"{path / CARD}: not a card of this semisup ({FORMAT!r}); assemble it again")
    try:
        with np.load(path / BANK) as data:
            features, labels = data["features"], data["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path / BANK}: not a labeled bank ({exc}); assemble the folder again") from None
    if features.ndim != 2 or labels.shape != features.shape[:1] or not _ids_in(labels, len(names)):
        raise DataError(
            f"{path / BANK}: {labels.shape} labels for {features.shape} features, or labels outside "
            f"[0, {len(names)}); assemble the folder again"
        )
    return ModelFolder(
        path, card, [str(n) for n in names], features.astype(np.float32), labels.astype(np.int64)
    )


def _ids_in(labels: np.ndarray, num_classes: int) -> bool:
    return not labels.size or (labels.min() >= 0 and labels.max() < num_classes)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); assemble the model folder again") from None


def class_counts(labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """{class name: how many of `labels` (N,) have its id}."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts, strict=True)}
