"""Did a change help? Two revisions' study runs paired by method, budget and seed: B - A beyond seed noise.

A run's label subset is drawn from its (budget, seed) alone, so a run at revision A and the run of the same
method, budget and seed at revision B trained and were scored on the same labels: their scores pair up, and
the mean of B - A over seeds gets the report's paired t-test (semisup.reporting.stats.paired_test), per method
x budget x score. Each revision's metrics/runs/<method>-<budget>-<seed>/{knn.json,linear.json} are read
through DVC at that revision (a git commit, branch or tag, or a DVC experiment), from the cache or the remote.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semisup.core.errors import UserError
from semisup.data.subsets import parse_run, run_name
from semisup.reporting.report import ALPHA, metric_label, metric_names, run_scores
from semisup.reporting.stats import CONFIDENCE, paired_test

RUNS = "metrics/runs"
RunKey = tuple[str, str, int]  # (method, budget as in run names: "5" or "all", seed)


@dataclass(frozen=True)
class Revision:
    """One revision's runs: the name given, its commit, each run's scores by metric, and the runs that DVC
    lists at that revision but whose metrics it could not read (run name -> why)."""

    name: str
    sha: str
    scores: dict[RunKey, dict[str, float]]
    unread: dict[str, str] = field(default_factory=dict)
    subsets: dict[tuple[str, int], tuple[int, ...] | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The revision as the table names it: `name (abc1234)`."""
        return self.name if self.name.startswith(self.sha[:7]) else f"{self.name} ({self.sha[:7]})"


@dataclass(frozen=True)
class Comparison:
    """B - A: one row per method x budget x metric (paired_test's fields, the seeds, each side's mean), the
    runs paired, the runs without a partner, and the (budget, seed) label subsets that differ between A and B."""

    a: Revision
    b: Revision
    rows: list[dict[str, Any]]
    paired: list[str]
    only_a: list[str]
    only_b: list[str]
    other_subsets: list[str]


def run_key(name: str) -> RunKey | None:
    """A metrics/runs folder's run as (method, budget, seed); None for a folder that is not a study run."""
    try:
        run = parse_run(name)
    except UserError:
        return None
    if run.seed is None:
        return None
    return run.method, "all" if run.budget is None else str(run.budget), run.seed


def knn_ks(knn: Mapping[str, Any]) -> list[int]:
    """The k of every score in a knn.json ({"k20": {...}, "k200": {...}} -> [20, 200])."""
    return sorted(int(key[1:]) for key in knn if re.fullmatch(r"k[1-9][0-9]*", key))


def _budget_order(budget: str) -> tuple[bool, int]:
    return budget == "all", int(budget) if budget.isdigit() else 0


def _order(key: RunKey) -> tuple:
    """Runs by method, then budget (numbers up, all last), then seed."""
    return key[0], _budget_order(key[1]), key[2]


def _open(repo: str | Path, rev: str) -> tuple[str, Any]:
    """The commit of `rev` (commit, branch, tag or experiment name) and a DVC file system at it."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import resolve_rev

    try:
        with Repo(str(repo)) as dvc_repo:
            sha = resolve_rev(dvc_repo.scm, rev)
            root = dvc_repo.root_dir
    except NotDvcRepoError:
        raise UserError(f"{repo}: not a DVC repository; run semisup compare inside the project") from None
    except DvcException:
        raise UserError(
            f"revision {rev!r}: no such git commit, branch or tag, nor DVC experiment in {repo}; "
            "name one that exists (git log --oneline, git branch -a, git tag, dvc exp list)"
        ) from None
    return sha, DVCFileSystem(root, rev=sha)


def _read_json(fs: Any, path: str) -> Any:
    with fs.open(path, "r") as f:
        return json.load(f)


def _read_subset(fs: Any, budget: str, seed: int) -> tuple[int, ...] | None:
    """The record ids of the (budget, seed) label subset at that revision; None when it cannot be read."""
    try:
        return tuple(_read_json(fs, f"data/splits/{budget}-{seed}.json")["ids"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


NOT_RUN = "not reproduced at that revision (its stages have no dvc.lock entry there)"


def _read_run(fs: Any, folder: str, rev: str) -> dict[str, float]:
    """One run's scores at the revision of `fs`; OSError when DVC cannot read them, LookupError when the
    revision declares the run without having reproduced it (an output with no hash)."""
    where = f"{RUNS}/{folder}"
    found = []
    for name in ("knn.json", "linear.json"):
        info = fs.info(f"{where}/{name}").get("dvc_info") or {}
        if info.get("isout") and info.get("md5") is None:
            raise LookupError(NOT_RUN)
        found.append(_read_json(fs, f"{where}/{name}"))
    knn, linear = found
    return run_scores(knn, linear, knn_ks(knn), where=f"{rev}:{where}")


def _refuse(label: str, unread: Mapping[str, str]) -> UserError:
    """The error for a revision with no readable run: none there, none reproduced, or none in storage."""
    stored = {run: why for run, why in unread.items() if why != NOT_RUN}
    if not stored:
        declared = f" ({len(unread)} runs declared in its dvc.yaml, none reproduced)" if unread else ""
        return UserError(
            f"{label}: no run metrics ({RUNS}/<method>-<budget>-<seed>/knn.json and linear.json){declared}; "
            "name a revision whose study was reproduced and committed (dvc repro, then git commit)"
        )
    first, why = next(iter(stored.items()))
    return UserError(
        f"{label}: the metrics of its {len(stored)} runs are neither in DVC's cache here nor in its "
        f"remote ({first}: {why}); push them from the machine that ran them (dvc push, or "
        "dvc exp push for an experiment), or name another revision"
    )


def read_revision(repo: str | Path, rev: str) -> Revision:
    """Every study run's scores at `rev`, read through DVC (cache, else the default remote)."""
    sha, fs = _open(repo, rev)
    try:
        folders = sorted(Path(p).name for p in fs.ls(RUNS, detail=False) if fs.isdir(p))
    except FileNotFoundError:
        folders = []
    scores: dict[RunKey, dict[str, float]] = {}
    unread: dict[str, str] = {}
    for folder in folders:
        key = run_key(folder)
        if key is None:
            continue
        try:
            scores[key] = _read_run(fs, folder, rev)
        except (OSError, ValueError, LookupError, UserError) as exc:
            unread[folder] = (str(exc).splitlines() or [type(exc).__name__])[0]
    if not scores:
        raise _refuse(f"revision {rev!r} ({sha[:7]})", unread)
    subsets = {(b, s): _read_subset(fs, b, s) for b, s in sorted({(k[1], k[2]) for k in scores})}
    return Revision(rev, sha, scores, unread, subsets)


def _metrics(a: Revision, b: Revision) -> list[str]:
    """Every score either revision has, in the report's column order (kNN@k, wkNN@k per k, linear)."""
    names = {m for side in (a, b) for scores in side.scores.values() for m in scores}
    ks = sorted(int(m.removeprefix("knn_k")) for m in names if m.startswith("knn_k"))
    return [m for m in metric_names(ks) if m in names]


def _row(a: Revision, b: Revision, keys: list[RunKey], metric: str, confidence: float) -> dict[str, Any]:
    """B - A over the paired runs `keys` of one method and budget: paired_test's fields, seeds, means."""
    values_a = [a.scores[k][metric] for k in keys]
    values_b = [b.scores[k][metric] for k in keys]
    method, budget, _ = keys[0]
    return {
        "method": method,
        "budget": budget,
        "metric": metric,
        "seeds": [k[2] for k in keys],
        "mean_a": sum(values_a) / len(values_a),
        "mean_b": sum(values_b) / len(values_b),
        **paired_test(values_b, values_a, confidence),
    }


def _other_subsets(a: Revision, b: Revision, paired: list[RunKey]) -> list[str]:
    """The (budget, seed) label subsets, read at both revisions, that differ: budget-seed names."""
    both = {k[1:] for k in paired if a.subsets.get(k[1:]) is not None and b.subsets.get(k[1:]) is not None}
    other = sorted(
        (bs for bs in both if a.subsets[bs] != b.subsets[bs]), key=lambda bs: (_budget_order(bs[0]), bs[1])
    )
    return [f"{budget}-{seed}" for budget, seed in other]


def compare(a: Revision, b: Revision, confidence: float = CONFIDENCE) -> Comparison:
    """B - A for every method x budget x score that both revisions scored on the same seeds (a score that
    one run of the pairs lacks, another knn.k, is left out)."""
    paired = sorted(set(a.scores) & set(b.scores), key=_order)
    groups: dict[tuple[str, str], list[RunKey]] = {}
    for key in paired:
        groups.setdefault(key[:2], []).append(key)
    rows = [
        _row(a, b, keys, metric, confidence)
        for keys in groups.values()
        for metric in _metrics(a, b)
        if all(metric in side.scores[k] for side in (a, b) for k in keys)
    ]
    return Comparison(
        a,
        b,
        rows,
        paired=[run_name(*k) for k in paired],
        only_a=[run_name(*k) for k in sorted(set(a.scores) - set(b.scores), key=_order)],
        only_b=[run_name(*k) for k in sorted(set(b.scores) - set(a.scores), key=_order)],
        other_subsets=_other_subsets(a, b, paired),
    )


# --- the table ---------------------------------------------------------------------------------------------

HEADER = ["method", "labels/class", "score", "n", "A", "B", "B - A", "{pct}% interval", "p"]


def row_cells(row: Mapping[str, Any]) -> list[str]:
    """A row's cells; one pair (n=1) has no interval and no p, and says so."""
    one = row["n"] < 2
    p = row["p_value"]
    return [
        row["method"],
        row["budget"],
        metric_label(row["metric"]),
        str(row["n"]),
        f"{row['mean_a']:.3f}",
        f"{row['mean_b']:.3f}",
        f"{row['mean_diff']:+.3f}",
        "n=1: none" if one else f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
        "n=1: none" if one else f"{p:.3g}" + (" *" if p < ALPHA else ""),
    ]


def _title(c: Comparison) -> str:
    return f"B = {c.b.label} against A = {c.a.label}: {len(c.paired)} runs paired by method, labels/class and seed"


def notes(c: Comparison) -> list[str]:
    """What the columns mean, which runs have no partner, and what was not read or not comparable."""
    pct = round(100 * CONFIDENCE)
    out = [
        f"B - A: the mean over seeds of each pair's difference (the same method, labels/class and seed: the "
        f"same label subset), its {pct}% t-interval and the paired t-test's p (* p < {ALPHA:.2f}); A and B: "
        "each side's mean. n=1: one pair, so no interval and no test. Each row is a test of its own: among "
        "many rows, some reach p < 0.05 by chance (one in twenty when nothing changed).",
    ]
    if not c.rows:
        out.append("No run of A has a partner at B: nothing to compare.")
    for side, runs in ((c.a, c.only_a), (c.b, c.only_b)):
        which = "A" if side is c.a else "B"
        out.append(f"Only at {which} ({side.label}), no partner: {', '.join(runs) if runs else 'none'}.")
    for which, side in (("A", c.a), ("B", c.b)):
        for run, why in side.unread.items():
            out.append(f"Not read at {which} ({side.label}): {run}: {why}.")
    if c.other_subsets:
        out.append(
            f"The label subsets of {', '.join(c.other_subsets)} differ between A and B (other data or "
            "splits): those pairs are not on the same labels."
        )
    return out


def format_text(c: Comparison) -> str:
    """The plain table for a terminal: title, aligned rows, notes."""
    pct = round(100 * CONFIDENCE)
    table = [[h.format(pct=pct) for h in HEADER]] + [row_cells(r) for r in c.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    wrapped = [textwrap.fill(note, width=110, subsequent_indent="  ") for note in notes(c)]
    return "\n".join([_title(c), "", *lines, "", *wrapped]) + "\n"


def format_markdown(c: Comparison) -> str:
    """The same as a Markdown section for a pull request."""
    pct = round(100 * CONFIDENCE)
    out = [f"## {c.b.label} - {c.a.label}", "", _title(c) + ".", ""]
    out += ["| " + " | ".join(h.format(pct=pct) for h in HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(row_cells(r)) + " |" for r in c.rows]
    return "\n".join(out + [""] + [f"{line}\n" for line in notes(c)]).rstrip("\n") + "\n"
