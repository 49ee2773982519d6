"""A run's model folder, models/<run>/: usable alone (predict from a copy, no data/), its card, and
`dvc artifacts get` from a git remote and a DVC remote (docs/models.md)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.linear_model import LogisticRegression

from semisup.evaluation.linear import ProbeWeights, l2_normalise
from semisup.model.modelcard import FILES, read_model_folder
from semisup.pipeline import artifacts
from semisup.reporting.stats import describe
from tests.support import BIN, copy_repo, run, tool_env

RUN = "paws-all-0"


def semisup(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed `semisup` command in cwd."""
    return subprocess.run(
        [str(BIN / "semisup"), *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600
    )


def predicted(path: Path) -> list[str]:
    with path.open() as f:
        return [row["predicted"] for row in csv.DictReader(f)]


def embeddings(repo: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(repo / "data" / "embeddings" / RUN / f"{split}.npz") as npz:
        return npz["features"], npz["labels"]


@pytest.fixture(scope="module")
def repo(trained_repo) -> Path:
    """The session's trained repository (read-only): every run's model stage has run."""
    return trained_repo


@pytest.fixture(scope="module")
def away(repo, tmp_path_factory) -> Path:
    """A folder with nothing of the repository but a copy of models/paws-all-0/ (as `model/`) and
    test/NNNNN.png, the test split's images in the split's order."""
    from semisup.data.readers import load_split

    root = tmp_path_factory.mktemp("away")
    shutil.copytree(repo / "models" / RUN, root / "model")
    images, _ = load_split(repo / "data" / "shards", "test")
    (root / "test").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / "test" / f"{i:05d}.png")
    return root


@pytest.mark.slow
def test_the_model_folder_holds_every_file_and_nothing_else(repo):
    assert sorted(p.name for p in (repo / "models" / RUN).iterdir()) == sorted(FILES)


@pytest.mark.slow
def test_a_copy_alone_votes_as_the_knn_stage(repo, away):
    assert not (away / "data").exists() and not (away / "params.yaml").exists()
    proc = semisup(away, "predict", "model", "test", "--vote", "plain", "--out", "knn.csv")
    assert proc.returncode == 0, proc.stderr
    assert "plain 20-NN vote -> knn.csv" in proc.stdout, proc.stdout
    stage = repo / "metrics" / "runs" / RUN / "confusion.csv"  # the knn stage's own votes at the smallest k
    assert predicted(away / "knn.csv") == predicted(stage)


@pytest.mark.slow
def test_a_copy_alone_predicts_with_the_linear_stages_probe(repo, away):
    proc = semisup(away, "predict", "model", "test", "--probe", "linear", "--out", "linear.csv")
    assert proc.returncode == 0, proc.stderr
    assert "linear probe -> linear.csv" in proc.stdout
    # The linear stage's probe, fitted again by scikit-learn as the stage fits it (its C, the subset).
    linear = json.loads((repo / "metrics" / "runs" / RUN / "linear.json").read_text())
    features, labels = embeddings(repo, "labeled")
    ids = json.loads((repo / "data" / "splits" / "all-0.json").read_text())["ids"]
    probe = LogisticRegression(C=linear["C"], max_iter=1000).fit(l2_normalise(features[ids]), labels[ids])
    test_x, test_y = embeddings(repo, "test")
    expected = probe.predict(l2_normalise(test_x))
    got = np.array([int(p) for p in predicted(away / "linear.csv")])  # digits' class names are 0..9
    assert got.tolist() == expected.tolist()
    assert np.mean(got == test_y) == pytest.approx(linear["accuracy"], abs=1e-12)
    with (away / "linear.csv").open() as f:
        shares = np.array([float(r["confidence"]) for r in csv.DictReader(f)])
    best = probe.predict_proba(l2_normalise(test_x)).max(axis=1)
    assert np.allclose(shares, best, atol=1e-4)


@pytest.mark.slow
def test_the_card_says_what_the_run_is(repo):
    folder = read_model_folder(repo / "models" / RUN)
    card = folder.card
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert (card["run"], card["method"], card["runs_method"]) == (RUN, "paws", "paws")
    assert (card["labels_per_class"], card["seed"]) == ("all", 0)
    manifest = json.loads((repo / "data" / "shards" / "manifest.json").read_text())
    assert card["classes"] == folder.class_names == manifest["class_names"]
    assert card["image_shape"] == manifest["image_shape"]
    # The bank: the run's labeled subset's embeddings, as its knn stage builds it.
    features, labels = embeddings(repo, "labeled")
    ids = json.loads((repo / "data" / "splits" / "all-0.json").read_text())["ids"]
    assert np.array_equal(folder.bank_features, features[ids]) and np.array_equal(
        folder.bank_labels, labels[ids]
    )
    assert card["bank"]["images"] == len(ids) and sum(card["bank"]["per_class"].values()) == len(ids)
    # The settings it ran with, the scores its stages wrote.
    assert card["settings"]["knn"]["k"] == params["knn"]["k"]
    assert (
        card["settings"]["method"]["sharpen_temperature"] == params["methods"]["paws"]["sharpen_temperature"]
    )
    assert card["settings"]["train"]["epochs"] == params["train"]["epochs"] == 2
    knn = json.loads((repo / "metrics" / "runs" / RUN / "knn.json").read_text())
    linear = json.loads((repo / "metrics" / "runs" / RUN / "linear.json").read_text())
    assert card["scores"]["knn"] == {k: v for k, v in knn.items() if k != "versions"}
    assert card["scores"]["linear"]["accuracy"] == linear["accuracy"]
    # Digests: data, code, the files it was assembled from; the libraries of every stage.
    import hashlib

    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert card["data"]["manifest_sha256"] == sha(repo / "data" / "shards" / "manifest.json")
    assert card["data"]["subset_sha256"] == sha(repo / "data" / "splits" / "all-0.json")
    assert card["code"]["pretrain"] == sha(repo / "data" / "code" / "pretrain-paws.json")
    assert card["files"]["encoder.keras"] == sha(repo / "models" / RUN / "encoder.keras")
    assert set(card["versions"]) == {"pretrain", "knn", "linear", "model"}
    assert card["versions"]["knn"] == knn["versions"]
    # One seed: the study's entry has the mean, and no interval.
    study = card["study"]["scores"]["linear"]
    assert card["study"]["seeds"] == [0] and study["n"] == 1 and study["half_width"] is None
    assert study["mean"] == linear["accuracy"]
    page = (repo / "models" / RUN / "card.md").read_text()
    assert page.startswith(f"# {RUN}: paws (paws), all labels per class, seed 0")
    assert f"| linear | {linear['accuracy']:.4f} | {linear['accuracy']:.4f} (one seed: no interval) |" in page


@pytest.mark.slow
def test_a_card_of_a_study_with_two_seeds_carries_its_interval(repo, tmp_path):
    # crossentropy (the quickest) at a second seed: the report's intervals reach both of its cards.
    repo = copy_repo(repo, tmp_path / "r")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["method_names"], params["study"]["seeds"] = ["crossentropy"], [0, 1]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "dvc", "repro", "model@crossentropy-all-0", "model@crossentropy-all-1")
    linear = [
        json.loads((repo / "metrics" / "runs" / f"crossentropy-all-{s}" / "linear.json").read_text())[
            "accuracy"
        ]
        for s in (0, 1)
    ]
    expected = describe(linear)  # mean, std, n and the 95% t-interval, by semisup.reporting.stats
    assert expected["half_width"] > 0, linear
    for seed in (0, 1):
        card = json.loads((repo / "models" / f"crossentropy-all-{seed}" / "card.json").read_text())
        study = card["study"]
        assert study["seeds"] == [0, 1] and study["confidence"] == 0.95
        got = study["scores"]["linear"]
        for key in ("mean", "std", "n", "ci_low", "ci_high", "half_width"):
            assert got[key] == pytest.approx(expected[key], abs=1e-12), key
        assert got["best_method"] == "crossentropy" and got["indistinguishable_from_best"] is True
        assert card["scores"]["linear"]["accuracy"] == linear[seed]
        page = (repo / "models" / f"crossentropy-all-{seed}" / "card.md").read_text()
        row = f"| linear | {linear[seed]:.4f} | {expected['mean']:.4f} ± {expected['half_width']:.4f} (2 seeds) |"
        assert row in page
    t = 12.706204736174696  # t(0.975, 1 degree of freedom), by hand
    assert expected["half_width"] == pytest.approx(t * abs(linear[0] - linear[1]) / 2, rel=1e-9)


@pytest.mark.slow
def test_dvc_artifacts_get_fetches_the_folder_from_git_and_a_dvc_remote(repo, tmp_path):
    # The folder is the outputs of three stages (pretrain, linear, model), fetched as one artifact: its
    # version registered as DVC's model registry (GTO) does it, a `<name>@v<semver>` annotated git tag.
    repo = copy_repo(repo, tmp_path / "r")
    origin, store = tmp_path / "origin.git", tmp_path / "store"
    run(tmp_path, "git", "init", "-q", "--bare", "--initial-branch=main", str(origin))
    run(repo, "dvc", "remote", "add", "-d", "store", str(store))
    run(repo, "git", "commit", "-qam", "a DVC remote")
    run(repo, "git", "tag", "-a", f"{RUN}@v1.0.0", "-m", f"Registering artifact {RUN} version v1.0.0")
    run(repo, "dvc", "push", "-q")
    run(repo, "git", "push", "-q", str(origin), "HEAD:refs/heads/main", "--tags")
    proc = run(tmp_path, "dvc", "artifacts", "get", str(origin), RUN, "-o", "got")
    assert "Downloaded 6 file(s) to 'got'" in proc.stdout, proc.stdout
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == sorted(FILES)
    for name in FILES:
        assert (tmp_path / "got" / name).read_bytes() == (repo / "models" / RUN / name).read_bytes(), name
    # An artifact with no registered version is not found; `dvc get` of its path still fetches it.
    proc = subprocess.run(
        ["dvc", "artifacts", "get", str(origin), "suncet-all-0", "-o", "none"],
        cwd=tmp_path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0 and "Unable to find artifact 'suncet-all-0'" in proc.stdout + proc.stderr
    run(tmp_path, "dvc", "get", str(origin), "models/suncet-all-0", "-o", "suncet")
    assert sorted(p.name for p in (tmp_path / "suncet").iterdir()) == sorted(FILES)


def test_artifacts_section_one_per_run_named_as_dvc_wants():
    got = artifacts.declared(["paws", "paws_mc"], {"paws": "paws", "paws_mc": "paws"}, [5, "all"], [0, 1])
    assert list(got)[:3] == ["paws-5-0", "paws-5-1", "paws-all-0"]
    assert len(got) == 8 and got["paws-mc-5-1"]["path"] == "models/paws_mc-5-1"
    assert got["paws-mc-5-1"]["labels"] == ["paws_mc", "paws", "budget-5", "seed-1"]
    assert got["paws-5-0"]["labels"] == ["paws", "budget-5", "seed-0"] and got["paws-5-0"]["type"] == "model"
    from gto.constants import assert_name_is_valid  # DVC's own check of artifact names

    for name in got:
        assert_name_is_valid(name)
        assert name == name.lower() and "_" not in name


def test_artifacts_section_is_rewritten_in_place_and_checked(tmp_path):
    text = "stages:\n  a:\n    cmd: x\n\nartifacts:\n  old:\n    path: p\n\nplots:\n  - p.csv\n"
    want = artifacts.declared(["paws"], {"paws": "paws"}, [5], [0])
    new = artifacts.replace_section(text, artifacts.render(want))
    doc = yaml.safe_load(new)
    assert doc["artifacts"] == want and doc["plots"] == ["p.csv"] and doc["stages"] == {"a": {"cmd": "x"}}
    assert artifacts.replace_section(new, artifacts.render(want)) == new  # idempotent, header not doubled
    assert artifacts.problems(doc, want) == []
    (line,) = artifacts.problems(yaml.safe_load(text), want)
    assert line == (
        "dvc.yaml: artifacts: missing paws-5-0; not in the study old: run `python -m semisup.pipeline.artifacts` to "
        "write them"
    )
    appended = artifacts.replace_section("stages: {}\n", artifacts.render(want))
    assert yaml.safe_load(appended)["artifacts"] == want


def test_the_repositorys_artifacts_are_its_study():
    root = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    assert artifacts.problems(doc, artifacts.from_params(root / "params.yaml")) == []
    assert set(doc["artifacts"]) == {f"{m}-all-0" for m in ("crossentropy", "infonce", "suncet", "paws")}


@pytest.mark.parametrize("classes", [2, 4])
def test_probe_weights_predict_as_scikit_learn(tmp_path, classes):
    rng = np.random.default_rng(classes)
    x, y = rng.normal(size=(60, 5)), np.arange(60) % classes
    probe = LogisticRegression(C=0.7, max_iter=500).fit(l2_normalise(x), y)
    ProbeWeights.of(probe).save(tmp_path / "probe.npz")
    weights = ProbeWeights.load(tmp_path / "probe.npz", "rerun")
    queries = rng.normal(size=(40, 5)) * 3.0  # not normalised: predict normalises as the stage does
    got, share = weights.predict(queries)
    assert got.tolist() == probe.predict(l2_normalise(queries)).tolist()
    assert np.allclose(share, probe.predict_proba(l2_normalise(queries)).max(axis=1), atol=1e-6)
    assert weights.C == 0.7 and got.dtype == np.int64


def test_an_incomplete_model_folder_is_one_line_and_exit_2(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "card.json").write_text("{}")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    proc = semisup(tmp_path, "predict", "m", "imgs")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(
        "error: m: not a complete model folder (no encoder.keras, bank.npz, classes.json)"
    )
