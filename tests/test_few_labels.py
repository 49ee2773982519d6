"""Few labels on the default recipe: the rule that fits a run's labeled batches and kNN's k to its labeled
subset (semisup.training.few_labels), by hand, and through the real stages at 1, 2 and 5 labels per class on
digits and at 5 on the STL10 mock, with the recipe's batches (params.yaml's, untouched)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from semisup.config import parse_params, read_params, resolve_run
from semisup.methods import METHODS
from semisup.training.few_labels import fit_k, fit_method, fit_spec
from tests.support import DATA, ENV, ROOT, write_params

RECIPE = parse_params(read_params(ROOT / "params.yaml"))


def test_a_batch_the_subset_fills_is_used_as_set() -> None:
    counts = np.full(10, 25)  # 250 labeled images: the recipe's batch fits
    for name in METHODS:
        params, changes = fit_method(METHODS[name], RECIPE.method(name), counts, f"methods.{name}")
        assert params == RECIPE.method(name) and changes == {}
    # An explicit batch smaller than the subset wins over the rule.
    mine = RECIPE.method("paws").__class__(labeled_batch=30)
    assert fit_method(METHODS["paws"], mine, np.full(10, 5), "methods.paws") == (mine, {})


@pytest.mark.parametrize("per_class", [1, 2, 5])
def test_a_larger_batch_becomes_the_subset(per_class: int) -> None:
    counts = np.full(10, per_class)
    for name in ("crossentropy", "suncet", "paws"):
        params, changes = fit_method(METHODS[name], RECIPE.method(name), counts, f"methods.{name}")
        assert params.labeled_batch == 10 * per_class
        assert changes[f"methods.{name}.labeled_batch"] == (250, 10 * per_class)
        assert params.unlabeled_batch == 250  # unlabeled batches stay the recipe's
    # InfoNCE never encodes its labeled batch: nothing to fit.
    assert fit_method(METHODS["infonce"], RECIPE.method("infonce"), counts, "methods.infonce")[1] == {}


def test_suncet_gets_a_second_view_where_a_class_has_one_image() -> None:
    one = fit_method(METHODS["suncet"], RECIPE.method("suncet"), np.full(10, 1), "methods.suncet")[0]
    two = fit_method(METHODS["suncet"], RECIPE.method("suncet"), np.full(10, 2), "methods.suncet")[0]
    assert (one.support_views, two.support_views) == (2, 1)
    # PAWS's supports need no partner: their labels are the targets.
    paws = fit_method(METHODS["paws"], RECIPE.method("paws"), np.full(10, 1), "methods.paws")[0]
    assert paws.support_views == 1


def test_stratified_supports_shrink_to_the_smallest_class() -> None:
    paper = RECIPE.method("paws_paper")  # 25 supports of each of the 10 classes
    counts = np.array([3, 4, 5, 3, 9, 3, 3, 3, 3, 7])
    params, changes = fit_method(METHODS["paws"], paper, counts, "methods.paws_paper")
    assert (params.supports_per_class, params.labeled_batch) == (3, 30)
    assert changes == {
        "methods.paws_paper.supports_per_class": (25, 3),
        "methods.paws_paper.labeled_batch": (250, 30),
    }


def test_k_larger_than_the_bank_becomes_its_smallest_class() -> None:
    assert fit_k((20, 200), np.full(10, 5)) == ((20, 5), {200: 5})
    assert fit_k((20, 200), np.full(10, 1)) == ((1, 1), {20: 1, 200: 1})
    assert fit_k((20, 200), np.array([30, 2, 40])) == ((20, 2), {200: 2})
    assert fit_k((20, 200), np.full(10, 25)) == ((20, 200), {})


def test_fit_spec_replaces_a_configurations_params_where_the_trainer_reads_them() -> None:
    spec = fit_spec(resolve_run(RECIPE, "paws_paper"), np.full(10, 2))
    fitted, record = spec.params, spec.fitted
    assert fitted.method("paws_paper").labeled_batch == 20
    assert fitted.methods.paws.labeled_batch == 20  # for_run's stand-in of the configuration
    assert spec.method_params == fitted.method("paws_paper")
    assert (spec.views.supports_per_class, spec.views.support_views) == (2, 2)  # the record's view options
    assert fitted.knn.k == (20, 200)  # as asked: the monitor and the knn stage fit k to their bank
    assert record.record()["used"] == {
        "methods.paws_paper.unlabeled_batch": 250,
        "methods.paws_paper.labeled_batch": 20,
        "methods.paws_paper.supports_per_class": 2,
        "methods.paws_paper.support_views": 2,
        "knn.k": [2, 2],
    }
    assert "fitted to the subset: methods.paws_paper.supports_per_class 25 -> 2" in record.describe("r")


# --- through the stages ------------------------------------------------------------------------------

# The rule's batches on digits' 10 classes for each budget, as the runs must record them.
EXPECTED = {
    per_class: {
        "crossentropy": {"labeled_batch": 10 * per_class},
        "infonce": {},
        "suncet": {"labeled_batch": 10 * per_class, **({"support_views": 2} if per_class == 1 else {})},
        "paws": {"labeled_batch": 10 * per_class},
    }
    for per_class in (1, 2, 5)
}
K_USED = {1: [1, 1], 2: [2, 2], 5: [20, 5]}

# One interpreter runs the stages' click commands one after another (one TensorFlow start-up, not 20).
LOOP = """
import sys, json
from click.testing import CliRunner
commands = json.loads(sys.argv[1])
import importlib
for module, args in commands:
    main = importlib.import_module(module).main
    try:
        main(args, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
"""


def _stages(cwd: Path, commands: list[tuple[str, list[str]]]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", LOOP, json.dumps(commands)],
        cwd=cwd,
        env=dict(ENV, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _recipe_params(path: Path, data: dict) -> Path:
    """params.yaml's recipe (its batches and knn.k) on `data`: one epoch of an 8-filter encoder."""
    return write_params(path, data | {"train.epochs": 1, "train.shuffle_buffer": 500, "encoder.filters": 8})


@pytest.mark.slow
def test_every_method_trains_at_1_2_and_5_labels_per_class_on_the_recipe(tmp_path, digits_shards) -> None:
    params = _recipe_params(tmp_path / "params.yaml", DATA)
    assert yaml.safe_load(params.read_text())["methods"]["paws"]["labeled_batch"] == 250
    common = ["--params", str(params), "--shards", str(digits_shards)]
    commands: list[tuple[str, list[str]]] = []
    for b in (1, 2, 5):
        commands.append(("stages.splits", ["--budget", str(b), "--seed", "0", "--out", "splits", *common]))
        for m in METHODS:
            run = ["--run", f"{m}-{b}-0", "--split", f"splits/{b}-0.json"]
            commands.append(("stages.pretrain", [*run, *common, "--metrics", "metrics"]))
    commands.append(("stages.embed", ["--run", "paws-1-0", *common]))
    commands.append(("stages.knn", ["--run", "paws-1-0", "--split", "splits/1-0.json", *common]))
    proc = _stages(tmp_path, commands)
    for b, methods in EXPECTED.items():
        for m, changed in methods.items():
            record = json.loads((tmp_path / f"metrics/{m}-{b}-0/train/batches.json").read_text())
            assert record["labeled"] == 10 * b and record["smallest_class"] == b
            got = {
                key.rsplit(".", 1)[1]: v["used"] for key, v in record["changed"].items() if "methods" in key
            }
            assert got == changed, (m, b)
            assert record["used"]["knn.k"] == K_USED[b]
            assert f"{m}-{b}-0: methods.{m}.unlabeled_batch" in proc.stderr  # the run says what it used
            assert (tmp_path / f"models/{m}-{b}-0/encoder.keras").exists()
    # The knn stage at 1 label per class: both k's become 1, under the keys asked for.
    scores = json.loads((tmp_path / "metrics/runs/paws-1-0/knn.json").read_text())
    assert scores["k20"]["k"] == scores["k200"]["k"] == 1
    _check_one_nn(tmp_path, scores["k20"]["accuracy"])


def _check_one_nn(root: Path, accuracy: float) -> None:
    """kNN@1 of the knn stage against scikit-learn's on the same embeddings and bank."""
    from sklearn.neighbors import KNeighborsClassifier

    with (
        np.load(root / "data/embeddings/paws-1-0/labeled.npz") as bank,
        np.load(root / "data/embeddings/paws-1-0/test.npz") as test,
    ):
        ids = json.loads((root / "splits/1-0.json").read_text())["ids"]
        knn = KNeighborsClassifier(n_neighbors=1, metric="cosine")
        knn.fit(bank["features"][ids], bank["labels"][ids])
        assert accuracy == pytest.approx(float(np.mean(knn.predict(test["features"]) == test["labels"])))


@pytest.mark.slow
def test_every_method_trains_at_5_labels_per_class_on_the_stl10_mock(tmp_path, monkeypatch) -> None:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from semisup.data import shards, stl10

    def as_dataset(self, split, **kwargs):  # 500 unlabeled images (one InfoNCE batch), 100 train, 50 test
        n = {"unlabelled": 500, "train": 100}.get(split, 50)
        images = np.random.default_rng(n).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(n) % 10})

    monkeypatch.setattr(stl10, "host_reachable", lambda *a, **k: True)
    data = {"data.source": "stl10", "data.labeled_per_class": 10, "data.num_shards": 2}
    params = _recipe_params(tmp_path / "params.yaml", data)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        raw = tmp_path / "raw"
        stl10.prepare_stl10(raw, manual_dir=tmp_path / "m", download_dir=tmp_path / "d", labeled_per_class=10)
        src = stl10.stl10_splits(raw, image_size=96, labeled_per_class=10, seed=0)
        shards.write_shards(
            tmp_path / "shards", src, image_size=96, num_shards=2, seed=0, data_params=data, progress=False
        )
    common = ["--params", str(params), "--shards", str(tmp_path / "shards")]
    commands = [("stages.splits", ["--budget", "5", "--seed", "0", "--out", "splits", *common])]
    for m in METHODS:
        run = ["--run", f"{m}-5-0", "--split", "splits/5-0.json", "--metrics", "metrics"]
        commands.append(("stages.pretrain", [*run, *common]))
    _stages(tmp_path, commands)
    for m, changed in EXPECTED[5].items():
        record = json.loads((tmp_path / f"metrics/{m}-5-0/train/batches.json").read_text())
        got = {key.rsplit(".", 1)[1]: v["used"] for key, v in record["changed"].items() if "methods" in key}
        assert got == changed and record["used"]["knn.k"] == [20, 5] and record["labeled"] == 50
