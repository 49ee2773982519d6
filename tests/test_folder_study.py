"""Your folder in one command: `make study DATA=path` (python -m drivers.study --data PATH) picks the
budgets, image size and epochs, says so first, and runs the study through DVC's queue; a folder that
cannot make a study is refused in one line, before anything is queued."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivers.profiles import folder_study
from semisup.core.errors import UserError
from tests.support import copy_repo, git_project, tiny_sets, tool_env


def make_folder(root: Path, per_class: dict[str, int], unlabeled: int = 0) -> Path:
    """A class sub-folder of `n` distinct 20x20 PNGs per class name, and `unlabeled` in unlabeled/."""
    rng = np.random.default_rng(0)
    folders = {**per_class, "unlabeled": unlabeled}
    for c, (name, n) in enumerate(folders.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 60, (20, 20, 3)) + 60 * (c % 4)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_the_study_takes_the_budgets_every_class_can_give(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", {"cat": 14, "dog": 9, "fox": 30}, unlabeled=7)
    study = folder_study(root)
    # dog: 9 images, 2 for the test split (0.2 x 9, rounded), 7 for labels: budgets 1 and 5.
    assert study.budgets == (1, 5) and study.classes == 3 and study.labeled == 53
    # Left for the unlabeled split: (14-3-5) + (9-2-5) + (30-6-5) + 7 = 34; batches 17, InfoNCE 34.
    assert study.unlabeled == 34
    p = study.profile
    assert p["data.path"] == str(root.resolve()) and p["data.labeled_per_class"] == 5
    assert p["study.labeled_per_class"] == "[1,5]" and p["data.image_size"] == 32
    assert p["methods.paws.unlabeled_batch"] == 17 and p["methods.infonce.unlabeled_batch"] == 34
    assert p["methods.paws.labeled_batch"] == 250  # the recipe's, fitted to each run's subset
    assert "budgets [1, 5] labels per class" in study.lines()[1]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"cat": 5}, "has one class sub-folder (cat)"),
        ({"cat": 5, "dog": 1}, "class 'dog' has 1 image: a study (1 label per class and 1 test image) need"),
        ({"cat": 5, "dog": 0}, "class folder"),  # an empty class folder: no images
        ({}, "has no class sub-folders"),
        ({"cat": 2, "dog": 2}, "images would be left for the unlabeled split"),
    ],
)
def test_a_folder_that_cannot_make_a_study_is_refused(tmp_path: Path, layout, message) -> None:
    root = make_folder(tmp_path / "imgs", layout)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        folder_study(root)


def _study(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drivers.study", *args],
        cwd=repo,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_the_driver_refuses_a_bad_folder_in_one_line_before_queueing(tmp_path: Path) -> None:
    repo = git_project(tmp_path / "p", {})
    root = make_folder(tmp_path / "imgs", {"cat": 6})
    for data in (root, tmp_path / "missing"):
        proc = _study(repo, "--data", str(data))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: data.path: ") and proc.stderr.count("\n") == 1
    assert not (repo / ".dvc" / "tmp" / "exps").exists()  # nothing was queued


@pytest.mark.slow
def test_a_folder_study_end_to_end(tmp_path: Path, digits_repo: Path) -> None:
    repo = copy_repo(digits_repo, tmp_path / "r")
    root = make_folder(tmp_path / "imgs", {"cat": 12, "dog": 12, "fox": 12}, unlabeled=12)
    tiny = [s for s in tiny_sets() if not s.startswith(("-Sdata.", "-Smethods."))]
    # PAWS alone at 1 label per class, one seed: every stage of the study, at a quarter of four methods' cost.
    sets = ["-Sstudy.labeled_per_class=[1]", "-Sstudy.seeds=[0]", "-Smethod_names=[paws]"]
    proc = _study(repo, "--data", str(root), *tiny, *sets, "--jobs", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = proc.stderr.splitlines()[:2]
    assert first[0].startswith(f"study: {root.resolve()}: 3 classes, 36 labeled images")
    assert "budgets [1, 5, 10] labels per class" in first[1]
    assert f"The study of {root.resolve()}" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:2][1:] == ["1"]]
    assert [r[0] for r in rows] == ["paws"]
    assert (repo / "study" / "report.html").exists()
