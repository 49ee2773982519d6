"""Linear probe: separable features, equality with a direct scikit-learn fit, no test labels in selection."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_info

from semisup.evaluation.linear import l2_normalise, linear_probe, select_c
from tests.support import ENV, ROOT

GRID = (0.01, 1.0, 100.0)


def blobs(per_class: int, classes: int = 4, dim: int = 16, noise: float = 1.0, seed: int = 0):
    """Gaussian clusters around well-separated centres: (N, D) float32 features, (N,) labels."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, dim)) * 4
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + noise * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def probe(train, test, **kw):
    args = {"c_grid": GRID, "folds": 5, "fixed_c": 10.0, "max_iter": 1000} | kw
    return linear_probe(*train, *test, **args)


def test_separable_features_score_about_one():
    result = probe(blobs(10), blobs(50, seed=1))
    assert result["accuracy"] >= 0.99
    assert result["selected_by"] == "cv" and result["folds"] == 5 and result["train_images"] == 40


def test_equals_a_direct_sklearn_fit():
    (x, y), (xt, yt) = blobs(8, noise=4.0), blobs(40, noise=4.0, seed=1)
    result = probe((x, y), (xt, yt))
    xn, xtn = x / np.linalg.norm(x, axis=1, keepdims=True), xt / np.linalg.norm(xt, axis=1, keepdims=True)
    splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    cv = {c: cross_val_score(LogisticRegression(C=c, max_iter=1000), xn, y, cv=splitter).mean() for c in GRID}
    best = min(c for c in GRID if cv[c] == max(cv.values()))
    assert result["C"] == best
    assert result["cv_accuracy"] == {str(c): pytest.approx(v) for c, v in cv.items()}
    direct = LogisticRegression(C=best, max_iter=1000).fit(xn, y).predict(xtn)
    assert result["accuracy"] == pytest.approx(np.mean(direct == yt))
    assert 0.3 < result["accuracy"] < 1.0  # noisy enough that C matters


def test_selection_never_sees_test_labels():
    train, (xt, yt) = blobs(8, noise=4.0), blobs(40, noise=4.0, seed=1)
    shuffled = np.random.default_rng(0).permutation(yt)
    a, b = probe(train, (xt, yt)), probe(train, (xt, shuffled))
    assert (a["C"], a["cv_accuracy"]) == (b["C"], b["cv_accuracy"])
    assert a["accuracy"] != b["accuracy"]  # the score does use them


def test_too_few_per_class_uses_the_fixed_c():
    x, y = blobs(3)
    assert select_c(l2_normalise(x), y, c_grid=GRID, folds=5, fixed_c=7.0, max_iter=100)["folds"] == 3
    one = select_c(l2_normalise(x[::3]), y[::3], c_grid=GRID, folds=5, fixed_c=7.0, max_iter=100)
    assert one == {"C": 7.0, "selected_by": "fixed", "folds": 0, "cv_accuracy": {}}


def test_l2_normalise():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(x), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.slow
def test_stage_trains_on_the_subset_only(tmp_path):
    (x, y), (xt, yt) = blobs(10, noise=3.0), blobs(30, noise=3.0, seed=1)
    run = tmp_path / "emb" / "paws-5-0"
    run.mkdir(parents=True)
    np.savez(run / "labeled.npz", features=x, labels=y)
    np.savez(run / "test.npz", features=xt, labels=yt)
    ids = np.sort(np.concatenate([np.flatnonzero(y == c)[:5] for c in range(4)]))
    (tmp_path / "5-0.json").write_text(json.dumps({"ids": ids.tolist()}))
    (tmp_path / "params.yaml").write_text("linear: {c_grid: [0.01, 1.0, 100.0], folds: 5}\n")
    cmd = [sys.executable, "-m", "stages.linear", "--run", "paws-5-0", "--split", str(tmp_path / "5-0.json")]
    cmd += ["--params", str(tmp_path / "params.yaml"), "--embeddings", str(tmp_path / "emb")]
    cmd += ["--models", str(tmp_path / "models")]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "out")], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "out" / "paws-5-0" / "linear.json").read_text())
    expected = probe((x[ids], y[ids]), (xt, yt))
    assert (written["accuracy"], written["C"], written["folds"]) == (expected["accuracy"], expected["C"], 5)
    assert written["train_images"] == 20
    # Its weights, saved beside the encoder (models/<run>/probe.npz), score what it scored.
    from semisup.evaluation.linear import ProbeWeights

    weights = ProbeWeights.load(tmp_path / "models" / "paws-5-0" / "probe.npz", "rerun")
    assert weights.C == expected["C"] and weights.coef.shape == (4, x.shape[1])
    assert np.mean(weights.predict(xt)[0] == yt) == written["accuracy"]
    (tmp_path / "5-0.json").write_text(json.dumps({"ids": [0, 99]}))
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "out2")], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "out2").exists()


def test_fits_run_with_one_blas_thread(monkeypatch):
    # Many BLAS threads buy nothing on the probe's small products and, on a busy machine, made the fits
    # several times slower (bench/linear_probe.py): every fit and the scoring run with one.
    import semisup.evaluation.linear

    seen = []

    class Recording(LogisticRegression):
        def fit(self, *args, **kwargs):
            seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(
        semisup.evaluation.linear, "make_probe", lambda c, max_iter: Recording(C=c, max_iter=max_iter)
    )
    before = [i["num_threads"] for i in threadpool_info()]
    train, test = blobs(10), blobs(5, seed=1)
    assert probe(train, test)["accuracy"] > 0.9
    assert len(seen) == len(GRID) * 5 + 1 and all(threads == {1} for threads in seen)
    assert [i["num_threads"] for i in threadpool_info()] == before  # restored afterwards


def test_stage_sets_its_blas_threads_before_numpy_loads():
    # `python -m stages.linear` sets OPENBLAS_NUM_THREADS in __main__: that takes effect only if nothing the
    # module imports at its top has loaded NumPy yet.
    code = "import sys, stages.linear; print(sorted(m for m in ('numpy', 'sklearn') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
