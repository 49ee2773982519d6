"""The download and shard stages as commands: outputs, one-line errors (exit 2), and `dvc repro` in a fresh repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stages import download, shard
from tests.support import copy_project, write_params
from tests.test_data_sources import make_folder

ROOT = Path(__file__).resolve().parents[1]
DIGITS = {"seed": 0, "data": {"source": "digits", "image_size": 32, "labeled_per_class": 10, "num_shards": 2}}


def _params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params))
    return path


def _run(command, tmp_path: Path, *args: str):
    return CliRunner().invoke(
        command, ["--params", str(tmp_path / "params.yaml"), *args], catch_exceptions=False
    )


def _dirs(tmp_path: Path) -> list[str]:
    return ["--raw-dir", str(tmp_path / "raw")]


def test_digits_download_then_shard(tmp_path: Path) -> None:
    _params(tmp_path / "params.yaml", DIGITS)
    result = _run(download.main, tmp_path, *_dirs(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "raw" / "digits.npz").exists()
    result = _run(shard.main, tmp_path, *_dirs(tmp_path), "--out", str(tmp_path / "shards"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["image_shape"] == [32, 32, 3] and manifest["counts"]["labeled"] == 100
    assert manifest["data"]["labeled_per_class"] == 10 and manifest["seed"] == 0
    assert "digits: unlabeled" in result.stdout


def test_folder_download_then_shard(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", bad=True)
    data = {
        "source": "folder",
        "path": str(root),
        "image_size": 32,
        "labeled_per_class": 2,
        "on_bad_image": "skip",
    }
    _params(tmp_path / "params.yaml", {"data": data})
    result = _run(download.main, tmp_path, *_dirs(tmp_path))
    assert result.exit_code == 0, result.output
    assert "1 unreadable skipped" in result.stdout
    result = _run(shard.main, tmp_path, *_dirs(tmp_path), "--out", str(tmp_path / "shards"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "shards" / "manifest.json").read_text())["counts"]["labeled"] == 6


@pytest.mark.parametrize("on_bad_image", ["error", "skip"])
def test_folder_images_are_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_bad_image: str
) -> None:
    """Across download + shard each file is decoded at most once; the download stage decodes none."""
    import hashlib

    from PIL import ImageFile

    from semisup.data import folder
    from tests.test_data_sources import truncated_jpeg

    root = make_folder(tmp_path / "imgs", per_class=4, unlabeled=2)  # PNG (gray, RGB) and JPEG files
    truncated_jpeg(root / "dog" / "cut.jpg")  # its header reads: only decoding it fails
    files = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.relative_to(root).as_posix()
        for p in root.rglob("*.*")
        if p.suffix in (".png", ".jpg")
    }
    decodes: dict[str, int] = {}
    pixel_loads = []  # Pillow's own decoder runs, whoever calls them
    real_decode, real_load = folder.decode_image, ImageFile.ImageFile.load

    def counting_decode(data: bytes, **kwargs):
        name = files[hashlib.sha256(data).hexdigest()]
        decodes[name] = decodes.get(name, 0) + 1
        return real_decode(data, **kwargs)

    def counting_load(self):
        if self.tile:  # pixel data still to decode (load() of a loaded image decodes nothing)
            pixel_loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(folder, "decode_image", counting_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    data = {"source": "folder", "path": str(root), "image_size": 32, "labeled_per_class": 2}
    _params(tmp_path / "params.yaml", {"data": data | {"on_bad_image": on_bad_image}})
    result = _run(download.main, tmp_path, *_dirs(tmp_path))
    assert result.exit_code == 0, result.output
    assert decodes == {} and pixel_loads == []  # the download stage reads headers only
    index = json.loads((tmp_path / "raw" / folder.INDEX_FILE).read_text())
    assert "dog/cut.jpg" in [e["file"] for e in index["labeled"]]
    # A leftover of a killed shard run (unlocked) is removed by the next one.
    stale = tmp_path / "data" / ".shards-pixels.killed.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 100)
    out = tmp_path / "data" / "shards"
    result = _run(shard.main, tmp_path, *_dirs(tmp_path), "--out", str(out))
    assert max(decodes.values()) == 1 and decodes["dog/cut.jpg"] == 1
    assert len(pixel_loads) == sum(decodes.values())  # no decoding besides decode_image's
    assert list((tmp_path / "data").iterdir()) == ([out] if on_bad_image == "skip" else [])
    if on_bad_image == "error":
        _one_line_error(result, rf"{root / 'dog' / 'cut.jpg'}: not a readable image: decoding failed")
        return
    assert result.exit_code == 0, result.output
    assert sorted(decodes) == sorted(files.values())  # every file, exactly once
    assert ", 1 unreadable skipped (dog/cut.jpg) ->" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    # 3 classes x 4 images + 2 unlabeled; dog's cut.jpg left out of the split.
    assert sum(manifest["counts"].values()) == 3 * 4 + 2


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("data: {source: cifar}", r"data\.source: 'cifar' is not one of stl10, digits, folder"),
        ("data: {source: digits, num_shards: 0}", r"data\.num_shards: 0 is out of range"),
        ("data: {source: digits\n  bad: [", r"not valid YAML"),
        ("data: {source: digits, labeled_per_class: 500}", r"labeled_per_class: 500 .*at most 139"),
        (
            "data: {source: folder, path: /nonexistent/imgs}",
            r"data\.path: /nonexistent/imgs is not a directory",
        ),
    ],
)
def test_download_bad_input_is_one_line(tmp_path: Path, text: str, pattern: str) -> None:
    (tmp_path / "params.yaml").write_text(text)
    result = _run(download.main, tmp_path, *_dirs(tmp_path))
    _one_line_error(result, pattern)
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())


def test_download_unreadable_image_names_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", bad=True)
    _params(
        tmp_path / "params.yaml", {"data": {"source": "folder", "path": str(root), "labeled_per_class": 2}}
    )
    _one_line_error(_run(download.main, tmp_path, *_dirs(tmp_path)), r"dog/broken\.png: not a readable image")


def test_stl10_offline_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semisup.data import stl10

    monkeypatch.setattr(stl10, "host_reachable", lambda *a, **k: False)
    _params(tmp_path / "params.yaml", {"data": {"source": "stl10"}})
    args = ["--manual-dir", str(tmp_path / "manual"), "--download-dir", str(tmp_path / "dl")]
    result = _run(download.main, tmp_path, *_dirs(tmp_path), *args)
    _one_line_error(result, r"manual/stl10_binary\.tar\.gz does not exist.*digits or folder")


def test_shard_before_download_is_one_line(tmp_path: Path) -> None:
    _params(tmp_path / "params.yaml", DIGITS)
    result = _run(shard.main, tmp_path, *_dirs(tmp_path), "--out", str(tmp_path / "shards"))
    _one_line_error(result, r"digits\.npz not found: run the download stage")
    assert not (tmp_path / "shards").exists()


@pytest.mark.slow
def test_dvc_repro_download_and_shard(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    env.pop("PYTHONPATH", None)  # the copied code must be the code that runs

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    copy_project(tmp_path)  # the code, the real dvc.yaml and DVC's config
    overrides = {f"data.{key}": value for key, value in DIGITS["data"].items()}
    write_params(tmp_path / "params.yaml", overrides | {"seed": DIGITS["seed"]})
    run("git", "init", "-q")
    run(str(bin_dir / "dvc"), "repro", "download", "shard")
    manifest = json.loads((tmp_path / "data" / "shards" / "manifest.json").read_text())
    assert manifest["counts"]["labeled"] == 100 and manifest["source"] == "digits"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"code", "download", "shard"}  # (code: the digests of what they run)
    first = {p.name: p.read_bytes() for p in (tmp_path / "data" / "shards").iterdir()}
    # Forcing both stages again reproduces the same bytes, so DVC sees nothing changed.
    run(str(bin_dir / "dvc"), "repro", "-f", "download", "shard")
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "shards").iterdir()} == first
    assert yaml.safe_load((tmp_path / "dvc.lock").read_text()) == lock
    assert "up to date" in run(str(bin_dir / "dvc"), "status", "download", "shard").lower()
