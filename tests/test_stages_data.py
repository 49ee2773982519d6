"""The download and shard stages as commands: outputs, one-line errors (exit 2), and `dvc repro` in a fresh repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stages import download, shard
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


DVC_YAML = {
    "stages": {
        "download": {
            "cmd": "python -m stages.download",
            "deps": ["stages/download.py", "semisup/data"],
            "params": ["seed", "data"],
            "outs": ["data/raw"],
        },
        "shard": {
            "cmd": "python -m stages.shard",
            "deps": ["data/raw", "stages/shard.py", "semisup/data"],
            "params": ["seed", "data"],
            "outs": ["data/shards"],
        },
    }
}


@pytest.mark.slow
def test_dvc_repro_download_and_shard(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    env.pop("PYTHONPATH", None)  # the copied code must be the code that runs

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    for part in ("stages", "semisup"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    _params(tmp_path / "params.yaml", DIGITS)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    run("git", "init", "-q")
    run(str(bin_dir / "dvc"), "init", "-q")
    run(str(bin_dir / "dvc"), "repro", "download", "shard")
    manifest = json.loads((tmp_path / "data" / "shards" / "manifest.json").read_text())
    assert manifest["counts"]["labeled"] == 100 and manifest["source"] == "digits"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"download", "shard"}
    first = {p.name: p.read_bytes() for p in (tmp_path / "data" / "shards").iterdir()}
    # Forcing both stages again reproduces the same bytes, so DVC sees nothing changed.
    run(str(bin_dir / "dvc"), "repro", "-f", "download", "shard")
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "shards").iterdir()} == first
    assert yaml.safe_load((tmp_path / "dvc.lock").read_text()) == lock
    assert "up to date" in run(str(bin_dir / "dvc"), "status").lower()
