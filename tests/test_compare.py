"""`semisup compare REV_A REV_B`: two revisions' runs paired by method, budget and seed, B - A beyond noise.

The pairing and the table on hand-made scores (no DVC), then a tiny study in a real git + DVC repository
(a copy of the session's digits_repo) committed twice: A = paws on seeds [0, 1]; B = the same with another
kNN temperature (moves weighted kNN, not plain kNN), another linear C (moves the probe) and a third seed
(a run without a partner). What `compare` prints must equal semisup.reporting.stats' paired test on the
numbers read straight from each commit's files; it reads them through DVC from the cache, from a remote in a
fresh clone, and at a DVC experiment's name.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from semisup.reporting.compare import (
    Comparison,
    Revision,
    compare,
    format_markdown,
    format_text,
    row_cells,
    run_key,
)
from semisup.reporting.stats import paired_test
from tests.support import TINY_STUDY, copy_repo, run, tool_env, write_params

# --- pairing and the table, on hand-made scores --------------------------------------------------------------


def scores(**runs: float) -> dict:
    """{run key: scores} with one linear score per run (kNN@5 = linear - 0.1)."""
    out = {}
    for name, linear in runs.items():
        key = run_key(name.replace("_", "-"))
        out[key] = {"knn_k5": linear - 0.1, "weighted_knn_k5": linear - 0.05, "linear": linear}
    return out


A = Revision("main", "a" * 40, scores(paws_5_0=0.50, paws_5_1=0.60, paws_5_2=0.55, suncet_all_0=0.7))
B = Revision(
    "change",
    "b" * 40,
    scores(paws_5_0=0.56, paws_5_1=0.64, paws_5_2=0.62, suncet_all_0=0.72, infonce_5_0=0.4),
)


def row(found: Comparison, method: str, budget: str, metric: str) -> dict:
    (hit,) = [r for r in found.rows if (r["method"], r["budget"], r["metric"]) == (method, budget, metric)]
    return hit


def test_run_names_are_keys_and_other_folders_are_not_runs():
    assert run_key("paws-5-0") == ("paws", "5", 0)
    assert run_key("paws_paper-all-2") == ("paws_paper", "all", 2)
    assert run_key("paws-None-1") == ("paws", "all", 1)  # a null budget, as DVC's matrix spells it
    assert run_key("paws") is None and run_key("train") is None and run_key("paws-5-x") is None


def test_pairs_by_method_budget_and_seed_against_a_hand_computation():
    found = compare(A, B)
    assert found.paired == ["paws-5-0", "paws-5-1", "paws-5-2", "suncet-all-0"]
    assert found.only_a == [] and found.only_b == ["infonce-5-0"]
    linear = row(found, "paws", "5", "linear")
    diffs = np.array([0.06, 0.04, 0.07])  # B - A, seed by seed
    half = sps.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert linear["n"] == 3 and linear["seeds"] == [0, 1, 2]
    assert linear["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-12)
    assert linear["ci_low"] == pytest.approx(diffs.mean() - half, abs=1e-12)
    assert linear["ci_high"] == pytest.approx(diffs.mean() + half, abs=1e-12)
    assert linear["p_value"] == pytest.approx(sps.ttest_rel([0.56, 0.64, 0.62], [0.50, 0.60, 0.55]).pvalue)
    assert linear["mean_a"] == pytest.approx(0.55) and linear["mean_b"] == pytest.approx(1.82 / 3)
    assert [r["metric"] for r in found.rows if r["method"] == "paws"] == [
        "knn_k5",
        "weighted_knn_k5",
        "linear",
    ]


def test_one_pair_has_no_interval_and_says_so():
    found = compare(A, B)
    one = row(found, "suncet", "all", "linear")
    assert one["n"] == 1 and one["ci_low"] is None and one["p_value"] is None
    assert one["mean_diff"] == pytest.approx(0.02)
    assert row_cells(one)[-2:] == ["n=1: none", "n=1: none"]
    text = format_text(found)
    line = next(x for x in text.splitlines() if x.startswith("suncet") and "linear" in x)
    assert line.split() == ["suncet", "all", "linear", "1", "0.700", "0.720", "+0.020"] + ["n=1:", "none"] * 2
    assert "Only at B (change (bbbbbbb)), no partner: infonce-5-0." in text.replace("\n  ", " ")
    assert "Only at A (main (aaaaaaa)), no partner: none." in text


def test_a_run_only_at_a_is_named_and_different_subsets_are_flagged():
    a = Revision("x", "c" * 40, A.scores, subsets={("5", 0): (1, 2), ("5", 1): (3, 4), ("all", 0): None})
    b = Revision("y", "d" * 40, {k: v for k, v in B.scores.items() if k[2] != 2}, subsets={("5", 0): (1, 9)})
    found = compare(a, b)
    assert found.only_a == ["paws-5-2"] and found.only_b == ["infonce-5-0"]
    assert found.other_subsets == ["5-0"]  # 5-1 and all-0 are unknown at one side: not claimed to differ
    assert "The label subsets of 5-0 differ" in format_markdown(found)


def test_a_score_that_one_side_lacks_is_left_out():
    more = {k: v | {"knn_k20": 0.3, "weighted_knn_k20": 0.31} for k, v in B.scores.items()}
    found = compare(A, Revision("k20", "e" * 40, more))
    assert {r["metric"] for r in found.rows} == {"knn_k5", "weighted_knn_k5", "linear"}
    found = compare(Revision("k20", "e" * 40, more), Revision("k20b", "f" * 40, more))
    assert [r["metric"] for r in found.rows[:5]] == [
        "knn_k5",
        "weighted_knn_k5",
        "knn_k20",
        "weighted_knn_k20",
        "linear",
    ]
    assert all(r["mean_diff"] == 0.0 and r["p_value"] in (None, 1.0) for r in found.rows)


def test_markdown_is_a_table_with_a_row_per_method_budget_and_score():
    md = format_markdown(compare(A, B))
    lines = md.splitlines()
    head = lines.index("| method | labels/class | score | n | A | B | B - A | 95% interval | p |")
    table = [x for x in lines[head + 2 :] if x.startswith("|")]
    assert len(table) == 2 * 3  # (paws, 5) and (suncet, all) x kNN@5, wkNN@5, linear
    assert lines[0] == "## change (bbbbbbb) - main (aaaaaaa)"


# --- two commits of a tiny study in a real git + DVC repository ------------------------------------------------

TINY = TINY_STUDY | {"study.seeds": "[0,1]"}
CHANGE = {"knn.temperature": 0.5, "linear.c_grid": "[0.01]"}  # moves weighted kNN and linear, not kNN


def file_scores(repo: Path) -> dict[str, dict[str, float]]:
    """Each run's scores read straight from the workspace's files."""
    out = {}
    for folder in sorted((repo / "metrics" / "runs").iterdir()):
        knn = json.loads((folder / "knn.json").read_text())["k5"]
        linear = json.loads((folder / "linear.json").read_text())
        out[folder.name] = {
            "kNN@5": knn["accuracy"],
            "wkNN@5": knn["weighted_accuracy"],
            "linear": linear["accuracy"],
        }
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits_repo) -> dict:
    """The repository, its first commit (`data`: digits_repo's, no run reproduced), tags a and b, and the
    scores of each read from its files after its repro."""
    repo = copy_repo(digits_repo, tmp_path_factory.mktemp("compare") / "r")
    data = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    write_params(repo / "params.yaml", TINY)
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "A")
    run(repo, "git", "tag", "a")
    scores_a = file_scores(repo)
    run(repo, "git", "checkout", "-qb", "change")
    write_params(repo / "params.yaml", TINY | CHANGE | {"study.seeds": "[0,1,2]"})
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "B")
    run(repo, "git", "tag", "b")
    return {"repo": repo, "data": data, "a": scores_a, "b": file_scores(repo)}


def semisup(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "semisup.app.cli", *args],
        cwd=repo,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def expected_lines(a: dict, b: dict, seeds: list[int]) -> list[list[str]]:
    """The table's paws rows, split at spaces, from semisup.reporting.stats' paired test on the files' numbers
    (B - A)."""
    lines = []
    for score in ("kNN@5", "wkNN@5", "linear"):
        va, vb = [a[f"paws-5-{s}"][score] for s in seeds], [b[f"paws-5-{s}"][score] for s in seeds]
        t = paired_test(vb, va)
        cells = ["paws", "5", score, str(len(seeds)), f"{np.mean(va):.3f}", f"{np.mean(vb):.3f}"]
        cells += [f"{t['mean_diff']:+.3f}", f"[{t['ci_low']:+.3f},", f"{t['ci_high']:+.3f}]"]
        cells += [f"{t['p_value']:.3g}"] + (["*"] if t["p_value"] < 0.05 else [])
        lines.append(cells)
    return lines


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.startswith("paws ")]


@pytest.mark.slow
def test_two_commits_print_the_paired_test_of_their_files(study):
    a, b = study["a"], study["b"]
    assert set(a) == {"paws-5-0", "paws-5-1"} and set(b) == {"paws-5-0", "paws-5-1", "paws-5-2"}
    assert [a[r]["kNN@5"] for r in sorted(a)] == [b[r]["kNN@5"] for r in sorted(a)]  # the same encoders
    assert any(a[r]["linear"] != b[r]["linear"] for r in a)  # the change moved the probe
    proc = semisup(study["repo"], "compare", "a", "b")
    assert proc.returncode == 0, proc.stderr
    assert table(proc.stdout) == expected_lines(a, b, [0, 1])
    knn = table(proc.stdout)[0]
    assert knn[6] == "+0.000" and knn[-1] == "1"  # no difference: the stats module's p = 1
    flat = proc.stdout.replace("\n  ", " ")
    assert "Only at B (b (" in flat and "no partner: paws-5-2." in flat
    assert "Only at A (a (" in flat and "), no partner: none." in flat
    assert "2 runs paired by method, labels/class and seed" in proc.stdout


@pytest.mark.slow
def test_markdown_and_a_file_for_a_pull_request(study):
    out = study["repo"].parent / "pr" / "compare.md"
    proc = semisup(study["repo"], "compare", "b", "a", "--markdown", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == out.read_text() + f"-> {out}\n"
    rows = [line for line in out.read_text().splitlines() if line.startswith("| paws | 5 |")]
    swapped = expected_lines(study["b"], study["a"], [0, 1])  # A = b, B = a: paired_test(a, b)
    assert [[c.strip() for c in row.strip("|").split("|")] for row in rows] == [
        [*mine[:7], f"{mine[7]} {mine[8]}", " ".join(mine[9:])] for mine in swapped
    ]
    assert "Only at A (b (" in out.read_text() and "paws-5-2" in out.read_text()


@pytest.mark.slow
def test_a_bad_revision_or_one_without_runs_is_refused_in_one_line(study):
    proc = semisup(study["repo"], "compare", "a", "nope")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(
        "error: revision 'nope': no such git commit, branch or tag, nor DVC experiment"
    )
    assert len(proc.stderr.splitlines()) == 1
    proc = semisup(study["repo"], "compare", study["data"], "b")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert f"error: revision '{study['data']}' ({study['data'][:7]}): no run metrics" in proc.stderr
    assert "none reproduced" in proc.stderr


@pytest.mark.slow
def test_a_fresh_clone_reads_both_commits_from_the_remote(study, tmp_path):
    store, clone = tmp_path / "store", tmp_path / "clone"
    run(study["repo"], "dvc", "remote", "add", "--local", "-d", "store", str(store))
    run(study["repo"], "dvc", "push", "-q", "-a")
    run(tmp_path, "git", "clone", "-q", str(study["repo"]), str(clone))
    proc = semisup(clone, "compare", "a", "b")  # no cache, no remote: nothing to read
    assert proc.returncode == 2 and "neither in DVC's cache here nor in its remote" in proc.stderr
    run(clone, "dvc", "remote", "add", "--local", "-d", "store", str(store))
    proc = semisup(clone, "compare", "a", "b")
    assert proc.returncode == 0, proc.stderr
    assert table(proc.stdout) == expected_lines(study["a"], study["b"], [0, 1])
    assert not (clone / "metrics" / "runs").exists()  # read at each revision, nothing checked out


@pytest.mark.slow
def test_an_experiment_name_is_a_revision(study):
    repo = study["repo"]
    run(repo, "git", "checkout", "-qb", "from-a", "a")
    run(repo, "dvc", "checkout", "-q")
    sets = [arg for key, value in CHANGE.items() for arg in ("-S", f"{key}={value}")]
    run(repo, "dvc", "exp", "run", "-q", "-n", "knn-temperature", *sets)  # from DVC's run cache: B's stages
    proc = semisup(repo, "compare", "a", "knn-temperature")
    assert proc.returncode == 0, proc.stderr
    assert table(proc.stdout) == expected_lines(study["a"], study["b"], [0, 1])
    assert "B = knn-temperature (" in proc.stdout
