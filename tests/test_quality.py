"""Quality on real data: the demo's digits profile, every method trained for real and scored by kNN@20."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from drivers.profiles import DEMO as DEMO_PARAMS
from semisup.config import parse_params
from semisup.data.readers import load_split
from semisup.methods import METHODS
from tests.support import make_shards, params_with, write_params

# Bars set from measured runs of this profile (seed 0): see the closing note of the methods issue.
CHANCE = 0.1
WIDE_MARGIN = 0.6


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    make_shards(tmp, write_params(tmp / "params.yaml", DEMO_PARAMS))
    return parse_params(params_with(DEMO_PARAMS)), tmp


@pytest.fixture(scope="module")
def raw_pixel_knn20(digits) -> float:
    """kNN@20 on raw pixels (cosine, as for the embeddings): the bar a learned encoder should clear."""
    _, tmp = digits
    bank, bank_labels = load_split(tmp / "shards", "labeled")
    queries, query_labels = load_split(tmp / "shards", "test")
    clf = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute")
    clf.fit(bank.reshape(len(bank), -1) / 255.0, bank_labels)
    return float(np.mean(clf.predict(queries.reshape(len(queries), -1) / 255.0) == query_labels))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_learns_on_digits(name, digits, raw_pixel_knn20):
    from semisup.pretrain import pretrain

    params, tmp = digits
    history = pretrain(
        name,
        params,
        shard_dir=tmp / "shards",
        model_dir=tmp / "models" / name,
        metrics_dir=tmp / "metrics" / name,
        checkpoint_root=tmp / "ckpt",
    )
    final = history[-1]["knn_k20"]
    print(
        f"{name}: kNN@20 {final:.4f} (raw pixels {raw_pixel_knn20:.4f}, first epoch {history[0]['knn_k20']:.4f})"
    )
    assert len(history) == params.train.epochs
    assert final > WIDE_MARGIN > CHANCE
    assert history[-1]["loss"] < history[0]["loss"]
    if name in ("suncet", "crossentropy"):
        assert final > raw_pixel_knn20
