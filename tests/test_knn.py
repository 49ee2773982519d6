"""Cosine kNN against scikit-learn, an independent numpy reference and hand-made ties; the knn stage end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner
from sklearn.neighbors import KNeighborsClassifier

from semisup.core.errors import DataError, UserError
from semisup.data.subsets import write_subset
from semisup.evaluation.knn import knn_accuracy, knn_predict, per_class_accuracy
from stages import knn as knn_stage


def cosine64(bank: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine similarities (Q, N) in float64."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float64) @ bank.astype(np.float64).T


def reference_votes(bank, labels, queries, k, num_classes, temperature=None) -> np.ndarray:
    """Class scores (Q, C): counts of the top-k labels, or sums of exp(sim / T) when T is given."""
    sims = cosine64(bank, queries)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    weights = np.ones_like(top_sims) if temperature is None else np.exp(top_sims / temperature)
    scores = np.zeros((len(queries), num_classes))
    np.add.at(scores, (np.arange(len(queries))[:, None], labels[top]), weights)
    return scores


def boundary_gaps(bank, queries, k) -> np.ndarray:
    """Per query, the gap between the k-th and (k+1)-th largest similarity (inf when k = bank size)."""
    sims = -np.sort(-cosine64(bank, queries), axis=1)
    return sims[:, k - 1] - sims[:, k] if k < sims.shape[1] else np.full(len(queries), np.inf)


def random_data(seed: int, n: int = 400, q: int = 150, dim: int = 16, classes: int = 10, spread=None):
    """A bank (n, dim) with every class present, queries (q, dim); clustered around class centres when spread is set."""
    rng = np.random.default_rng(seed)
    bank_labels = np.concatenate([np.arange(classes), rng.integers(0, classes, n - classes)])
    query_labels = rng.integers(0, classes, q)
    if spread is None:
        return rng.normal(size=(n, dim)), bank_labels, rng.normal(size=(q, dim)), query_labels
    centres = rng.normal(size=(classes, dim))
    bank = centres[bank_labels] + spread * rng.normal(size=(n, dim))
    return bank, bank_labels, centres[query_labels] + spread * rng.normal(size=(q, dim)), query_labels


@pytest.mark.parametrize("spread", [None, 1.0], ids=["random", "clustered"])
def test_unweighted_matches_sklearn(spread):
    bank, labels, queries, _ = random_data(0, spread=spread)
    ks = [1, 5, 20, 60]
    ours = knn_predict(bank, labels, queries, ks=ks, num_classes=10, query_chunk=64)
    for k in ks:
        sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(bank, labels)
        expected = sk.predict(queries)
        # float32 vs float64 may order neighbours differently only where two similarities nearly tie.
        clear = boundary_gaps(bank, queries, k) > 1e-5
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(ours[k][0][clear], expected[clear])
        assert ours[k][0].dtype == np.int64 and ours[k][0].shape == (len(queries),)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_weighted_matches_numpy_reference(temperature):
    bank, labels, queries, _ = random_data(1, spread=1.5)
    ks = [5, 30]
    ours = knn_predict(bank, labels, queries, ks=ks, num_classes=10, temperature=temperature)
    for k in ks:
        scores = reference_votes(bank, labels, queries, k, 10, temperature)
        best2 = -np.sort(-scores, axis=1)[:, :2]
        clear = (boundary_gaps(bank, queries, k) > 1e-5) & (best2[:, 0] - best2[:, 1] > 1e-4 * best2[:, 0])
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(ours[k][1][clear], scores.argmax(axis=1)[clear])
        # The weighted vote is a different classifier: it must disagree with the plain vote somewhere.
        assert temperature > 0.1 or (ours[k][1] != ours[k][0]).any()


def test_small_temperature_does_not_overflow():
    bank, labels, queries, _ = random_data(2, spread=1.0)
    ours = knn_predict(bank, labels, queries, ks=[10], num_classes=10, temperature=1e-3)
    # With T -> 0 the weight of the nearest neighbour dominates: weighted kNN becomes 1-NN.
    nearest = labels[cosine64(bank, queries).argmax(axis=1)]
    np.testing.assert_array_equal(ours[10][1], nearest)


def test_k1_is_nearest_neighbour():
    bank, labels, queries, _ = random_data(3)
    ours = knn_predict(bank, labels, queries, ks=[1], num_classes=10)
    nearest = labels[cosine64(bank, queries).argmax(axis=1)]
    np.testing.assert_array_equal(ours[1][0], nearest)
    np.testing.assert_array_equal(ours[1][1], nearest)


def unit(degrees: float) -> list[float]:
    """A 2-d unit vector at an angle."""
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


def test_vote_ties_go_to_lowest_class():
    # Neighbours of the query [1, 0], nearest first: class 2 (10 deg), 0 (20), 3 (30), 1 (40), 3 (90).
    bank = np.array([unit(10), unit(20), unit(30), unit(40), unit(90)])
    labels = np.array([2, 0, 3, 1, 3])
    out = knn_predict(bank, labels, np.array([[1.0, 0.0]]), ks=[1, 2, 4, 5], num_classes=4)
    assert out[1][0][0] == 2  # the nearest
    assert out[2][0][0] == 0  # 1 vote each for 2 and 0: the lower id, though 2 is nearer
    assert out[4][0][0] == 0  # 1 vote each for 2, 0, 3, 1
    assert out[5][0][0] == 3  # 2 votes for 3
    assert out[2][1][0] == 2  # weighted: the nearer class wins
    # Two neighbours at exactly the same similarity, different classes: both votes tie.
    mirror = knn_predict(
        np.array([unit(25), unit(-25)]), np.array([3, 1]), np.array([[1.0, 0.0]]), ks=[2], num_classes=4
    )
    assert mirror[2][0][0] == 1 and mirror[2][1][0] == 1


def test_chunking_does_not_change_results():
    bank, labels, queries, _ = random_data(4, q=50)
    runs = [
        knn_predict(bank, labels, queries, ks=[1, 3, 10], num_classes=10, query_chunk=c) for c in (1, 7, 1000)
    ]
    for run in runs[1:]:
        for k in (1, 3, 10):
            np.testing.assert_array_equal(run[k][0], runs[0][k][0])
            np.testing.assert_array_equal(run[k][1], runs[0][k][1])


def test_tensor_inputs_and_tf32_setting_restored():
    bank, labels, queries, _ = random_data(5, q=20)
    expected = knn_predict(bank, labels, queries, ks=[3], num_classes=10)
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    got = knn_predict(
        tf.constant(bank, tf.float32), tf.constant(labels), tf.constant(queries), ks=[3], num_classes=10
    )
    assert tf.config.experimental.tensor_float_32_execution_enabled() == before
    np.testing.assert_array_equal(got[3][0], expected[3][0])


def test_knn_accuracy_keys_and_values():
    bank, labels, queries, query_labels = random_data(6, spread=2.0)
    preds = knn_predict(bank, labels, queries, ks=[20, 5], num_classes=10)
    scores = knn_accuracy(bank, labels, queries, query_labels, ks=[20, 5], num_classes=10)
    assert list(scores) == ["k5", "k20"]
    for k in (5, 20):
        assert set(scores[f"k{k}"]) == {"accuracy", "weighted_accuracy"}
        assert scores[f"k{k}"]["accuracy"] == pytest.approx(np.mean(preds[k][0] == query_labels))
        assert scores[f"k{k}"]["weighted_accuracy"] == pytest.approx(np.mean(preds[k][1] == query_labels))
    assert 0.2 < scores["k20"]["accuracy"] < 1.0  # clustered data: better than chance, not trivial


def test_per_class_accuracy_by_hand():
    result = per_class_accuracy([0, 1, 1, 2, 0], [0, 1, 2, 2, 1], num_classes=4)
    assert result == [1.0, 0.5, 0.5, None]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"ks": [5, 11]}, ["knn.k", "11", "larger than the bank"]),
        ({"ks": [0]}, ["knn.k", "0"]),
        ({"ks": []}, ["knn.k"]),
        ({"query_features": np.zeros((0, 2))}, ["empty"]),
        ({"bank_features": np.zeros((0, 2)), "bank_labels": np.zeros(0, np.int64)}, ["empty"]),
        ({"query_features": np.ones((3, 5))}, ["dimension", "2", "5"]),
        ({"bank_labels": np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 10])}, ["bank_labels", "10", "[0, 3)"]),
        ({"bank_labels": np.array([0, -1, 2, 1, 1, 1, 1, 1, 1, 1])}, ["bank_labels", "-1"]),
        ({"bank_labels": np.zeros(4, np.int64)}, ["4 bank labels", "10 bank features"]),
        ({"bank_labels": np.zeros(10)}, ["integer"]),
        ({"temperature": 0.0}, ["knn.temperature"]),
        ({"query_chunk": 0}, ["knn.query_chunk"]),
    ],
)
def test_bad_input_is_a_user_error(change, words):
    args = {
        "bank_features": np.ones((10, 2)),
        "bank_labels": np.arange(10) % 3,
        "query_features": np.ones((3, 2)),
        "ks": [5],
        "num_classes": 3,
        "temperature": 0.07,
        "query_chunk": 4,
    } | change
    with pytest.raises(UserError) as info:
        knn_predict(args.pop("bank_features"), args.pop("bank_labels"), args.pop("query_features"), **args)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_nan_features_are_a_data_error():
    bank = np.ones((10, 2))
    bank[3, 1] = np.nan
    with pytest.raises(DataError, match="bank_features holds NaN"):
        knn_predict(bank, np.zeros(10, np.int64), np.ones((2, 2)), ks=[3], num_classes=1)


def test_query_label_count_must_match():
    with pytest.raises(UserError, match="2 query labels for 3 query features"):
        knn_accuracy(np.ones((5, 2)), np.zeros(5, np.int64), np.ones((3, 2)), [0, 0], ks=[1], num_classes=1)


# --- stage ---------------------------------------------------------------------------------------------------


def write_stage_inputs(root, ks=(3, 10), method="suncet"):
    """params.yaml, a manifest with 3 classes and clustered labeled/test embeddings under root."""
    bank, bank_labels, queries, query_labels = random_data(7, n=90, q=40, dim=8, classes=3, spread=1.5)
    (root / "params.yaml").write_text(yaml.safe_dump({"knn": {"k": list(ks), "query_chunk": 16}}))
    (root / "shards").mkdir()
    manifest = {"class_names": ["cat", "dog", "ship"], "num_classes": 3}
    (root / "shards" / "manifest.json").write_text(json.dumps(manifest))
    (root / "emb" / method).mkdir(parents=True)
    np.savez(root / "emb" / method / "labeled.npz", features=bank.astype(np.float32), labels=bank_labels)
    np.savez(root / "emb" / method / "test.npz", features=queries.astype(np.float32), labels=query_labels)
    return bank.astype(np.float32), bank_labels, queries.astype(np.float32), query_labels


def stage_args(root, method="suncet"):
    """The knn stage's options for the files under root."""
    args = ["--run", method, "--params", str(root / "params.yaml"), "--embeddings", str(root / "emb")]
    return [*args, "--shards", str(root / "shards"), "--out", str(root / "metrics")]


def run_stage(root, method="suncet"):
    """Invoke the knn stage in-process on the files under root."""
    return CliRunner().invoke(knn_stage.main, stage_args(root, method))


def test_stage_writes_metrics_and_confusion(tmp_path):
    bank, bank_labels, queries, query_labels = write_stage_inputs(tmp_path)
    result = run_stage(tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics" / "suncet" / "knn.json").read_text())
    assert list(metrics) == [
        "k3",
        "k10",
        "versions",
    ]  # the scores, and the library versions that computed them
    assert metrics["versions"]["numpy"] == np.__version__
    per_class = json.loads((tmp_path / "metrics" / "suncet" / "per_class.json").read_text())
    assert per_class["k"] == 3 and list(per_class["per_class_accuracy"]) == ["cat", "dog", "ship"]
    names = ["cat", "dog", "ship"]
    plain3 = reference_votes(bank, bank_labels, queries, 3, 3).argmax(axis=1)
    for k in (3, 10):
        plain = reference_votes(bank, bank_labels, queries, k, 3).argmax(axis=1)
        weighted = reference_votes(bank, bank_labels, queries, k, 3, temperature=0.07).argmax(axis=1)
        assert metrics[f"k{k}"]["accuracy"] == pytest.approx(np.mean(plain == query_labels))
        assert metrics[f"k{k}"]["weighted_accuracy"] == pytest.approx(np.mean(weighted == query_labels))
    for c, name in enumerate(names):
        in_class = query_labels == c
        assert per_class["per_class_accuracy"][name] == pytest.approx(np.mean(plain3[in_class] == c))
    with open(tmp_path / "metrics" / "suncet" / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["actual", "predicted"]
    assert rows[1:] == [[names[a], names[p]] for a, p in zip(query_labels, plain3, strict=True)]
    assert f"k3={metrics['k3']['accuracy']:.4f}" in result.stdout


def test_stage_bank_is_the_runs_subset_not_the_pool(tmp_path):
    # docs/pipeline.md: "knn@M-B-S: kNN accuracy with the run's subset as the bank". The embeddings hold the
    # whole labeled pool (90); the run's subset file names 5 per class of it.
    bank, bank_labels, queries, query_labels = write_stage_inputs(tmp_path, ks=(3, 10), method="paws-5-0")
    rng = np.random.default_rng(3)
    ids = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(bank_labels == c), 5, replace=False) for c in range(3)])
    )
    write_subset(tmp_path / "5-0.json", ids, bank_labels, budget=5, seed=0, num_classes=3)
    args = ["--run", "paws-5-0", "--split", str(tmp_path / "5-0.json")]
    result = CliRunner().invoke(knn_stage.main, [*stage_args(tmp_path, "paws"), *args])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics" / "paws-5-0" / "knn.json").read_text())
    for k in (3, 10):
        sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        expected = sk.fit(bank[ids], bank_labels[ids]).predict(queries)
        assert np.all(boundary_gaps(bank[ids], queries, k) > 1e-5)  # no near-tie at the k-th neighbour
        assert metrics[f"k{k}"]["accuracy"] == pytest.approx(np.mean(expected == query_labels))
    # The whole pool as the bank scores otherwise here, so the figures above tell the two apart.
    pool = reference_votes(bank, bank_labels, queries, 10, 3).argmax(axis=1)
    assert np.mean(pool == query_labels) != pytest.approx(metrics["k10"]["accuracy"])
    # The bank's size is the subset's: a k between the subset (15) and the pool (90) is the few-labels
    # rule's, the subset's smallest class (5), under the key of the k asked for.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"knn": {"k": [20], "query_chunk": 16}}))
    result = CliRunner().invoke(knn_stage.main, [*stage_args(tmp_path, "paws"), *args])
    assert result.exit_code == 0, result.output
    fitted = json.loads((tmp_path / "metrics" / "paws-5-0" / "knn.json").read_text())
    assert fitted["k20"]["k"] == 5
    sk = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute")
    expected = sk.fit(bank[ids], bank_labels[ids]).predict(queries)
    assert fitted["k20"]["accuracy"] == pytest.approx(np.mean(expected == query_labels))


def test_stage_missing_embeddings_names_the_stage(tmp_path):
    write_stage_inputs(tmp_path)
    (tmp_path / "emb" / "suncet" / "test.npz").unlink()
    result = run_stage(tmp_path)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "test.npz: not found" in result.stderr and "dvc repro embed@suncet" in result.stderr


def test_stage_k_larger_than_bank_is_its_smallest_class(tmp_path):
    bank, bank_labels, queries, query_labels = write_stage_inputs(tmp_path, ks=(3, 500))
    result = run_stage(tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics" / "suncet" / "knn.json").read_text())
    smallest = int(np.bincount(bank_labels).min())
    assert metrics["k500"]["k"] == smallest and "k" not in metrics["k3"]
    plain = reference_votes(bank, bank_labels, queries, smallest, 3).argmax(axis=1)
    assert metrics["k500"]["accuracy"] == pytest.approx(np.mean(plain == query_labels))


def test_stage_labels_outside_manifest_classes(tmp_path):
    write_stage_inputs(tmp_path)
    manifest = {"class_names": ["cat", "dog"], "num_classes": 2}
    (tmp_path / "shards" / "manifest.json").write_text(json.dumps(manifest))
    result = run_stage(tmp_path)
    assert result.exit_code == 2
    assert "labeled.npz: labels outside [0, 2)" in result.stderr
