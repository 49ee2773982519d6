"""Linear probe: multinomial logistic regression on frozen, L2-normalised features (scikit-learn).

The probe trains on the run's labeled subset only and is scored on the test split. Its inverse
regularisation strength C is picked by stratified k-fold cross-validation on the labeled subset (never
the test split): the C of the highest mean fold accuracy, the smallest such C on a tie. The folds shrink
to the smallest class's count; when some class has a single labeled image nothing can be
cross-validated, and the probe uses the fixed C it is given and says so (`selected_by: "fixed"`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from semisup.core.errors import DataError, UserError


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). (N, D) -> (N, D) float64."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def make_probe(c: float, max_iter: int) -> LogisticRegression:
    """The probe's estimator: L2-penalised multinomial logistic regression (lbfgs)."""
    return LogisticRegression(C=c, max_iter=max_iter)


def select_c(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    c_grid: Sequence[float],
    folds: int,
    fixed_c: float,
    max_iter: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Pick C by stratified CV on (features (N, D), labels (N,)) alone -> {C, selected_by, folds, cv_accuracy}."""
    present = np.bincount(labels) if len(labels) else np.zeros(1, np.int64)
    smallest = int(present[present > 0].min()) if present.any() else 0
    k = min(folds, smallest)
    if k < 2:
        return {"C": float(fixed_c), "selected_by": "fixed", "folds": 0, "cv_accuracy": {}}
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = {}
    for c in sorted(c_grid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores[float(c)] = float(
                cross_val_score(make_probe(c, max_iter), features, labels, cv=splitter).mean()
            )
    best = max(scores.values())
    chosen = min(c for c, score in scores.items() if score == best)
    return {
        "C": chosen,
        "selected_by": "cv",
        "folds": k,
        "cv_accuracy": {str(c): s for c, s in scores.items()},
    }


@dataclass(frozen=True)
class ProbeWeights:
    """A fitted probe's weights: coef (C', D), intercept (C',), classes (C',) int64, the class ids it knows
    (C' = 1 row for two classes, as scikit-learn stores a binary model)."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    C: float

    @classmethod
    def of(cls, probe: LogisticRegression) -> ProbeWeights:
        """The weights of a fitted scikit-learn probe."""
        return cls(
            probe.coef_.copy(), probe.intercept_.copy(), probe.classes_.astype(np.int64), float(probe.C)
        )

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw features (N, D) -> class ids (N,) int64 and the predicted class's probability (N,) float32,
        as scikit-learn's predict and predict_proba of the same probe (features L2-normalised first)."""
        scores = l2_normalise(features) @ self.coef.T + self.intercept  # (N, D) x (D, C') -> (N, C')
        if scores.shape[1] == 1:  # binary: one score, the second class's log-odds
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        best = np.argmax(scores, axis=1)
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        share = exp[np.arange(len(best)), best] / exp.sum(axis=1)
        return self.classes[best], share.astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write the weights as an .npz file (coef, intercept, classes, C)."""
        from semisup.core.io import write_npz

        arrays = {
            "coef": self.coef,
            "intercept": self.intercept,
            "classes": self.classes,
            "C": np.float64(self.C),
        }
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path, rerun: str) -> ProbeWeights:
        """The weights of an .npz file `save` wrote; a DataError naming it (and `rerun`) otherwise."""
        try:
            with np.load(path) as data:
                weights = cls(
                    data["coef"], data["intercept"], data["classes"].astype(np.int64), float(data["C"])
                )
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not a probe's weights ({exc}); {rerun}") from None
        if weights.coef.ndim != 2 or weights.intercept.shape != weights.coef.shape[:1]:
            raise DataError(
                f"{path}: coef {weights.coef.shape} and intercept {weights.intercept.shape} differ; {rerun}"
            )
        return weights


def fit_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    c_grid: Sequence[float],
    folds: int,
    fixed_c: float,
    max_iter: int,
    seed: int = 0,
) -> tuple[dict[str, Any], ProbeWeights]:
    """Fit on the normalised train features with the CV-picked C; -> ({accuracy, C, selected_by, folds,
    ...}, the probe's weights).

    Runs with one BLAS thread: the probe's products are small (N x D by D x classes), so more threads
    buy nothing, and on a busy machine (`make study` runs two experiments on two cores) OpenBLAS's
    spinning threads made an STL10-sized probe 11 to 30 times slower (bench/linear_probe.py)."""
    train_x, test_x = l2_normalise(train_features), l2_normalise(test_features)
    train_y = np.asarray(train_labels, dtype=np.int64)
    with threadpool_limits(limits=1, user_api="blas"):
        choice = select_c(
            train_x, train_y, c_grid=c_grid, folds=folds, fixed_c=fixed_c, max_iter=max_iter, seed=seed
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = make_probe(choice["C"], max_iter).fit(train_x, train_y)
        accuracy = float(np.mean(probe.predict(test_x) == np.asarray(test_labels)))
    result = {
        "accuracy": accuracy,
        **choice,
        "train_images": int(len(train_y)),
        "test_images": int(len(test_x)),
    }
    return result, ProbeWeights.of(probe)


def linear_probe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """fit_linear_probe's scores alone: {accuracy, C, selected_by, folds, cv_accuracy, ...}."""
    return fit_linear_probe(*args, **kwargs)[0]


def load_npz(path: str | Path, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """features (N, D) float32 and labels (N,) int64 of an embeddings file written by `stage`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found (run `dvc repro {stage}` first)")
    try:
        with np.load(path) as data:
            features, labels = data["features"], data["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not an embeddings file ({exc}); rerun `dvc repro -f {stage}`") from None
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise DataError(
            f"{path}: {labels.shape} labels for {features.shape} features; rerun `dvc repro -f {stage}`"
        )
    return features.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)
