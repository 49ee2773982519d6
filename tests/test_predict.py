"""`semisup predict`: a trained run classifies a folder of images as its knn stage classifies the test split."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semisup.config import load_params
from semisup.core.errors import DataError
from semisup.data.folder import decode_file
from semisup.data.images import decode_image, resize_rgb
from semisup.data.subsets import parse_run, run_subset_path
from semisup.model.predict import predict_folder
from tests.support import BIN, copy_repo, run, tool_env

RUN = "paws-all-0"
TRAINED = "crossentropy-all-0, infonce-all-0, paws-all-0, suncet-all-0"  # sorted, as the message lists them


def semisup(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed `semisup` command in cwd."""
    return subprocess.run(
        [str(BIN / "semisup"), *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def repo(trained_repo, tmp_path_factory) -> Path:
    """A copy of the session's git + DVC repository on the tests' digits data (tests/conftest.py
    `trained_repo`: paws-all-0 trained and scored by its knn stage, as every run), and test/NNNNN.png: the
    test split's images, in the split's order."""
    repo = copy_repo(trained_repo, tmp_path_factory.mktemp("predict") / "repo")
    from semisup.data.readers import load_split

    images, _ = load_split(repo / "data" / "shards", "test")
    (repo / "test").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(repo / "test" / f"{i:05d}.png")
    return repo


@pytest.mark.slow
def test_plain_vote_agrees_with_the_knn_stage_image_for_image(repo):
    proc = semisup(repo, "predict", RUN, "test", "--vote", "plain", "--out", "plain.csv")
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    rows = read_csv(repo / "plain.csv")
    stage = read_csv(repo / "metrics" / "runs" / RUN / "confusion.csv")  # the knn stage's own votes
    assert [r["file"] for r in rows] == [f"{i:05d}.png" for i in range(len(stage))]
    assert [r["predicted"] for r in rows] == [r["predicted"] for r in stage]
    k = min(load_params(repo / "params.yaml").knn.k)
    shares = np.array([float(r["confidence"]) for r in rows])
    assert np.allclose(shares * k, np.round(shares * k), atol=1e-3)  # a count of neighbours out of k
    assert shares.min() >= 1 / 10 - 1e-6  # the winner has at least its share of 10 classes


@pytest.mark.slow
def test_weighted_vote_agrees_with_knn_predict_on_the_stage_embeddings(repo):
    from semisup.data.subsets import read_subset
    from semisup.evaluation.knn import knn_predict

    proc = semisup(repo, "predict", RUN, "test")
    assert proc.returncode == 0, proc.stderr
    assert f"-> predictions-{RUN}.csv" in proc.stdout
    rows = read_csv(repo / f"predictions-{RUN}.csv")
    with np.load(repo / "data" / "embeddings" / RUN / "labeled.npz") as npz:
        ids = read_subset(repo / "data" / "splits" / "all-0.json", num_labeled=len(npz["labels"]))
        bank, labels = npz["features"][ids], npz["labels"][ids]
    with np.load(repo / "data" / "embeddings" / RUN / "test.npz") as npz:
        queries = npz["features"]
    ((plain, weighted),) = knn_predict(bank, labels, queries, ks=[20], num_classes=10).values()
    assert [int(r["predicted"]) for r in rows] == weighted.tolist()  # digits' class names are 0..9
    assert (weighted != plain).any()  # the two votes differ somewhere: the test tells them apart
    shares = np.array([float(r["confidence"]) for r in rows])
    assert 0.1 <= shares.min() and shares.max() <= 1.0 and len(np.unique(shares)) > 10


@pytest.mark.slow
def test_unreadable_file_follows_on_bad_image(repo, tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(folder / "sub" / "gray.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc = semisup(repo, "predict", RUN, str(folder), "--out", str(tmp_path / "p.csv"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "broken.jpg: not a readable image" in proc.stderr and "on_bad_image: skip" in proc.stderr
    assert not (tmp_path / "p.csv").exists()
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("on_bad_image: error", "on_bad_image: skip"))
    try:
        proc = semisup(repo, "predict", RUN, str(folder), "--out", str(tmp_path / "p.csv"))
    finally:
        run(repo, "git", "checkout", "params.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "1 images, 1 unreadable skipped" in proc.stdout
    assert [r["file"] for r in read_csv(tmp_path / "p.csv")] == ["sub/gray.png"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["paws-all-9", "test"],
            f"run 'paws-all-9': no models/paws-all-9/encoder.keras; trained runs here: {TRAINED}",
        ),
        (["paws-all", "test"], "run 'paws-all': not a run name: METHOD-BUDGET-SEED"),
        (["paws", "test"], f"run 'paws': no models/paws/encoder.keras; trained runs here: {TRAINED}"),
        ([RUN, "empty"], "empty: no PNG or JPEG images"),
        ([RUN, "nowhere"], "nowhere: not a folder"),
    ],
)
def test_a_run_or_folder_that_is_not_there_is_one_line_and_exit_2(repo, args, message):
    (repo / "empty").mkdir(exist_ok=True)
    (repo / "empty" / "notes.txt").write_text("no images here")
    proc = semisup(repo, "predict", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""


def png16(path: Path) -> np.ndarray:
    """A 16-bit RGB PNG of known pixels; -> what it must decode to (8-bit, scaled by 1/257)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (20, 20, 3), dtype=np.uint16)
    import zlib

    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    chunk = lambda kind, data: (  # noqa: E731
        len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    )
    ihdr = (20).to_bytes(4, "big") * 2 + bytes([16, 2, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return np.round(pixels / 257).astype(np.uint8)


def test_predict_decodes_as_the_folder_source(tmp_path):
    # Every file reaches the encoder as the shard stage decodes it: 16-bit scaled, EXIF turned, resized.
    expected16 = png16(tmp_path / "a16.png")
    exif = Image.new("RGB", (20, 10), (250, 0, 0))
    exif.paste((0, 0, 250), (0, 0, 5, 10))
    tags = Image.Exif()
    tags[0x0112] = 6  # rotate 90 degrees clockwise to view
    exif.save(tmp_path / "b_exif.jpg", exif=tags, quality=95)
    Image.new("P", (12, 12), 3).save(tmp_path / "c_palette.png")
    Image.new("L", (30, 30), 90).save(tmp_path / "d_big.png")
    seen = []

    def embed(images):
        seen.append(images)
        return np.zeros((len(images), 4), np.float32)

    files = sorted(tmp_path.glob("*"))
    found = predict_folder(
        files,
        embed=embed,
        vote=lambda f: (np.zeros(len(f), np.int64), np.ones(len(f), np.float32)),
        image_size=32,
        max_pixels=30 * 30,
        on_bad_image="skip",
        chunk=2,
    )
    got = np.concatenate(seen)
    assert [p.name for p in found.files] == ["a16.png", "b_exif.jpg", "c_palette.png", "d_big.png"]
    assert got.shape == (4, 32, 32, 3) and got.dtype == np.uint8
    assert np.array_equal(got[0], resize_rgb(expected16, 32))
    for i, name in enumerate(["a16.png", "b_exif.jpg", "c_palette.png", "d_big.png"]):
        data = (tmp_path / name).read_bytes()
        assert np.array_equal(got[i], resize_rgb(decode_image(data), 32)), name
        assert np.array_equal(got[i], decode_file(tmp_path / name, 32, None)), name
    turned = decode_image((tmp_path / "b_exif.jpg").read_bytes())
    assert turned.shape == (20, 10, 3) and turned[0, 0, 2] > 200  # portrait, the blue band on top
    found = predict_folder(
        files,
        embed=embed,
        vote=lambda f: (np.zeros(len(f)), np.ones(len(f))),
        image_size=32,
        max_pixels=500,
        on_bad_image="skip",
        chunk=3,
    )
    assert [p.name for p, _ in found.skipped] == ["d_big.png"], found.skipped  # 900 pixels > 500
    assert [p.name for p in found.files] == ["a16.png", "b_exif.jpg", "c_palette.png"]
    with pytest.raises(DataError, match=r"d_big\.png: refused before decoding.*data.max_pixels"):
        predict_folder(
            files,
            embed=embed,
            vote=lambda f: (np.zeros(len(f)), np.ones(len(f))),
            image_size=32,
            max_pixels=500,
            on_bad_image="error",
            chunk=3,
        )


def test_a_run_name_gives_its_method_budget_seed_and_subset():
    assert parse_run("paws-all-0") == ("paws", None, 0)
    assert parse_run("suncet-25-12") == ("suncet", 25, 12)
    assert parse_run("paws") == ("paws", None, None)
    assert run_subset_path("data/splits", "suncet-25-12") == Path("data/splits/25-12.json")
    assert run_subset_path("data/splits", "paws-all-0") == Path("data/splits/all-0.json")
    assert run_subset_path("data/splits", "paws") is None
    for bad in ("paws-all", "paws-x-0", "paws-5-"):
        with pytest.raises(Exception, match="not a run name: METHOD-BUDGET-SEED"):
            parse_run(bad)
