"""The README's commands on a fresh clone, in the README's order and again: demo, the suite's params test,
demo. All green, the same table twice, and no tracked file changed (params.yaml stays the STL10 recipe)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, tiny_sets

BIN = Path(sys.executable).parent
NOISE = re.compile(r"^[IWE]0000 |absl::InitializeLog", re.M)
# Two methods, one that encodes labeled images and one that does not (the demo profile sizes their batches
# by different rules): the commands and what they leave behind do not depend on the method, and every
# method's stages through DVC are test_pipeline_e2e's (two methods, not four, save a minute of CPU).
METHODS = ("infonce", "paws")
# The report's table: method, labels/class, then kNN@20 ... linear; `*` marks the best mean of a column.
TABLE = re.compile(rf"^method +labels/class +kNN@20 .*\n((?:\w+ +all +[\d. *]+\n){{{len(METHODS)}}})", re.M)


def run(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` with this venv's tools first on PATH; fail the test with its output on error."""
    base = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SEMISUP_VERBOSE")}
    full = base | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"} | (env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def fresh_clone(dest: Path) -> Path:
    """`git clone` of this repository at its HEAD, plus the working tree's uncommitted changes as a commit."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    run(dest.parent, "git", "clone", "-q", "--no-checkout", str(ROOT), dest.name)
    run(dest, "git", "checkout", "-q", head)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, capture_output=True).stdout
    if diff:
        subprocess.run(["git", "apply", "--binary", "-"], cwd=dest, input=diff, check=True)
    untracked = subprocess.run(
        ["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    for rel in filter(None, untracked.split("\0")):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    if run(dest, "git", "status", "--porcelain").stdout:
        run(dest, "git", "add", "-A")
        run(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "working tree")
    return dest


def tracked_changes(repo: Path) -> str:
    return run(repo, "git", "status", "--porcelain", "--untracked-files=no").stdout


@pytest.mark.slow
def test_demo_then_suite_then_demo_again_on_a_fresh_clone(tmp_path):
    repo = fresh_clone(tmp_path / "semisup")
    committed = run(repo, "git", "show", "HEAD:params.yaml").stdout
    # No git identity: the demo lends DVC one for its experiment commit.
    nobody = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)}
    sets = [*tiny_sets(), f"-Smethod_names=[{','.join(METHODS)}]"]
    first = run(repo, sys.executable, "-m", "drivers.demo", *sets, env=nobody)
    table = TABLE.search(first.stdout)
    assert table, first.stdout
    rows = {
        line.split()[0]: [float(x) for x in line.replace("*", " ").split()[2:]]
        for line in table.group(1).splitlines()
    }
    assert set(rows) == set(METHODS)
    assert (
        all(0.0 <= x <= 1.0 for row in rows.values() for x in row) and max(r[0] for r in rows.values()) > 0.2
    )
    name = re.search(r"experiment (demo-[0-9a-f]{8})", first.stdout).group(1)
    assert "pipeline wall time:" in first.stdout and "demo/knn_k20.png" in first.stdout
    assert f"dvc plots diff {name}" in first.stdout
    # The stages' output went through DVC: every stage's summary line, and not one TensorFlow start-up line.
    summaries = re.findall(r"^[\w./-]+: .* \[(?:\d+\.\d s|\d+ min \d\d s)\]$", first.stdout, re.M)
    # code, download, shard, splits, 5 per method (pretrain, embed, knn, linear, model), maps, report
    assert len(summaries) == 1 + 2 + 1 + 5 * len(METHODS) + 1 + 1, first.stdout
    assert not NOISE.search(first.stdout + first.stderr), first.stderr
    assert "WARNING" not in first.stderr, first.stderr  # nor DVC's about outputs the run is about to make
    # Results are visible without touching the workspace: figures in demo/ (ignored), the experiment in DVC.
    assert (repo / "demo" / "knn_k20.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        round(
            json.loads((repo / "demo" / "summary.json").read_text())["results"]["paws"]["all"]["knn_k20"][
                "mean"
            ],
            3,
        )
        == rows["paws"][0]
    )
    shown = run(repo, "dvc", "exp", "show", "--json").stdout
    assert name in shown
    assert tracked_changes(repo) == "" and (repo / "params.yaml").read_text() == committed
    assert not (repo / "dvc.lock").exists() and not (repo / "metrics").exists()

    # The suite's own check that the repository's params are the reference recipe, in the same clone.
    suite = run(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_config.py")
    assert re.search(r"\d+ passed", suite.stdout) and "failed" not in suite.stdout

    again = run(repo, sys.executable, "-m", "drivers.demo", *sets, env=nobody)
    assert f"already ran on this code: shown from experiment {name}" in again.stdout
    assert TABLE.search(again.stdout).group(1) == table.group(1)
    assert tracked_changes(repo) == ""


def test_demo_drops_only_dvc_warnings_nobody_can_act_on():
    import logging

    from drivers.demo import _DemoNoise

    def passes(message: str, *args: str) -> bool:
        return _DemoNoise().filter(logging.LogRecord("dvc", logging.WARNING, "x", 1, message, args, None))

    untracked = "The following untracked files were present in the experiment directory after reproduction "
    untracked += "but will not be included in experiment commits:\n\t%s"
    assert not passes("No file hash info found for '%s'. It won't be created.", "models/paws")
    assert not passes(untracked, "models/.gitignore, data/.gitignore")
    assert passes(untracked, "models/.gitignore, notes.txt")  # a user's file: they should know
    assert passes("Stage 'download' is cached - skipping run")


def test_demo_key_changes_with_the_code_and_only_with_it(tmp_path, monkeypatch):
    # docs/studies.md: "<key> is a digest of the commit, your uncommitted changes and the profile". Through
    # the CLI's --dry-run, in a small git repository of its own.
    from click.testing import CliRunner

    from drivers import demo
    from tests.support import run as run_tool

    repo = tmp_path / "repo"
    (repo / "semisup").mkdir(parents=True)
    (repo / "semisup" / "a.py").write_text("A = 1\n")
    (repo / ".gitignore").write_text("/ignored/\n")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")  # what -S settings are checked against
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "one"]):
        run_tool(repo, *cmd)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")

    def key(*sets: str) -> str:
        result = CliRunner().invoke(demo.main, ["--dry-run", *sets])
        assert result.exit_code == 0, result.output
        return re.search(r" -n (demo-[\w-]+) ", result.output).group(1)

    first = key()
    assert re.fullmatch(r"demo-[0-9a-f]{8}", first) and key() == first  # the same tree, the same key
    assert key("-Strain.epochs=1") != first  # the profile counts
    (repo / "semisup" / "a.py").write_text("A = 2\n")  # a change to a tracked file
    changed = key()
    assert changed != first
    (repo / "semisup" / "a.py").write_text("A = 1\n")
    assert key() == first
    (repo / "semisup" / "b.py").write_text("B = 1\n")  # an untracked new file: its name and its bytes
    untracked = key()
    assert untracked not in (first, changed)
    (repo / "semisup" / "b.py").write_text("B = 2\n")
    assert key() not in (first, changed, untracked)
    (repo / "semisup" / "b.py").unlink()
    assert key() == first
    # What git ignores, and what `dvc repro` writes (dvc.lock, metrics/), are not the code.
    for rel in ("ignored/out.bin", "dvc.lock", "metrics/summary.json"):
        (repo / rel).parent.mkdir(exist_ok=True)
        (repo / rel).write_text("results\n")
    assert key() == first
    run_tool(repo, "git", "commit", "-q", "--allow-empty", "-m", "two")  # another commit, the same files
    assert key() != first
