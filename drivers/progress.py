"""How far `make study` is, from what DVC records: stages finished out of the total, and a time left.

Each queued experiment runs in a temporary copy of the repository, which `dvc exp show --json` names
while it runs (drivers.dvcexp.Experiment.root). DVC
rewrites that copy's dvc.lock after every stage it finishes; a stage counts as finished once its lock
entry differs from the one the copy started with (the stash commit's dvc.lock). A stage finished by either
experiment counts once (the main experiment restores the other's stages from the run cache), except the
study-wide stages (maps, report: they read method_names, so each experiment has its own). The total is the
main experiment's stage count (`dvc stage list` in its copy). The time left adds up, for each stage not
finished yet, the measured mean time of finished stages of its kind (pretrain, embed, knn, ...); for the
main experiment, a stage of the other's pipeline costs the measured time of a restored one. The two
experiments run side by side, so the study's time left is the longer of theirs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drivers import dvcexp
from semisup.core.progress import duration

try:  # the C loader reads a study's dvc.lock (hundreds of stages) ten times faster
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as Loader  # type: ignore[assignment]


def lock_stages(text: str | None) -> dict[str, Any]:
    """The `stages` mapping of a dvc.lock's text (empty for none)."""
    if not text:
        return {}
    try:
        lock = yaml.load(text, Loader=Loader)
    except yaml.YAMLError:
        return {}  # caught mid-write: DVC writes it in place
    return dict(lock.get("stages") or {}) if isinstance(lock, dict) else {}


def stage_kind(stage: str) -> str:
    """A stage's kind: pretrain@paws-5-0 -> pretrain, report -> report."""
    return stage.split("@", 1)[0]


@dataclass
class Experiment:
    """One queued experiment's copy: where it is, what its lock held at the start, when stages finished."""

    name: str
    root: Path
    baseline: dict[str, Any]
    started: float
    finished: dict[str, float] = field(default_factory=dict)  # stage -> when it was first seen finished
    durations: dict[str, float] = field(default_factory=dict)  # stage -> seconds since the one before it
    reused: set[str] = field(default_factory=set)  # stages the other experiment had finished before
    stages: list[str] = field(default_factory=list)  # every stage of its pipeline, once known
    lock_mtime: float = -1.0

    def update(self, now: float, done_elsewhere: dict[str, float]) -> None:
        """Read the copy's dvc.lock if it changed; time the stages newly finished since the last read."""
        path = self.root / "dvc.lock"
        try:  # DVC removes a finished experiment's copy at any moment
            mtime = path.stat().st_mtime
            if mtime == self.lock_mtime:
                return
            text = path.read_text()
        except OSError:
            return
        self.lock_mtime = mtime
        lock = lock_stages(text)
        new = [s for s, entry in lock.items() if s not in self.finished and entry != self.baseline.get(s)]
        previous = max(self.finished.values(), default=self.started)
        # Stages of one experiment run one after another: the time since the last finish is theirs.
        for stage in new:
            self.finished[stage] = now
            self.durations[stage] = (now - previous) / len(new)
            if done_elsewhere.get(stage, now) <= previous:
                self.reused.add(stage)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class StudyProgress:
    """The study's experiments, read every poll; `line()` says how far it is."""

    def __init__(self, repo: Path, names: tuple[str, ...], main: str) -> None:
        self.repo, self.names, self.main = repo, names, main
        self.experiments: dict[str, Experiment] = {}
        self.study_wide = study_wide_stages(repo / "dvc.yaml")

    def shared(self, name: str) -> dict[str, float]:
        """Stages finished by the experiments other than `name` that `name` restores from the run cache:
        all but the study-wide ones (maps, report), whose inputs differ between the experiments."""
        return {
            stage: when
            for other, exp in self.experiments.items()
            if other != name
            for stage, when in exp.finished.items()
            if stage not in self.study_wide
        }

    def poll(self, running: Mapping[str, dvcexp.Experiment], now: float | None = None) -> None:
        """Find the experiments' copies (once each) among `running` (dvcexp.experiments()) and read their
        locks."""
        now = time.monotonic() if now is None else now
        for name, shown in running.items():
            root = shown.root
            if name in self.names and root and name not in self.experiments and Path(root).is_dir():
                self.experiments[name] = Experiment(name, Path(root), self._baseline(shown.rev, root), now)
        for name, exp in self.experiments.items():
            exp.update(now, self.shared(name))
            if not exp.stages:
                exp.stages = stage_names(exp.root)

    def _baseline(self, stash_rev: str, root: str) -> dict[str, Any]:
        """The dvc.lock that the experiment's copy started with: its stash commit's (none when the commit
        has no dvc.lock), or, where git does not know the commit, the copy's lock as first seen."""
        known = subprocess.run(["git", "cat-file", "-e", f"{stash_rev}^{{commit}}"], cwd=self.repo)
        if known.returncode == 0:
            proc = subprocess.run(
                ["git", "show", f"{stash_rev}:dvc.lock"], cwd=self.repo, capture_output=True, text=True
            )
            return lock_stages(proc.stdout if proc.returncode == 0 else None)
        try:
            return lock_stages((Path(root) / "dvc.lock").read_text())
        except OSError:
            return {}

    def line(self) -> str | None:
        """`N of T stages done (...), about M min left`; None until the main experiment's copy is read."""
        main = self.experiments.get(self.main)
        if main is None or not main.stages:
            return None
        done = (set(main.finished) | set(self.shared(self.main))) & set(main.stages)
        parts = [f"{len(e.finished)} of {len(e.stages) or '?'} in {n}" for n, e in self.experiments.items()]
        text = f"{len(done)} of {len(main.stages)} stages done ({', '.join(parts)})"
        left = self.time_left()
        return text + (f", about {duration(left)} left" if left is not None else ", time left after a stage")

    def time_left(self) -> float | None:
        """Seconds left: per experiment, its unfinished stages at the measured means; the longer of the two.

        The main experiment restores the stages of the other's pipeline (the other runs them, and its time
        left counts them): each costs it the measured time of a restored stage, nothing until one is seen.
        """
        ran: dict[str, list[float]] = {}
        restored: list[float] = []
        for exp in self.experiments.values():
            for stage, seconds in exp.durations.items():
                (restored if stage in exp.reused else ran.setdefault(stage_kind(stage), [])).append(seconds)
        everything = [s for values in ran.values() for s in values]
        if not everything:
            return None
        elsewhere = {
            stage
            for name, exp in self.experiments.items()
            if name != self.main
            for stage in exp.stages
            if stage not in self.study_wide
        }
        lefts = []
        for name, exp in self.experiments.items():
            left = 0.0
            for stage in exp.stages:
                if stage in exp.finished:
                    continue
                if name == self.main and stage in elsewhere:
                    left += mean(restored) or 0.0
                else:
                    left += mean(ran.get(stage_kind(stage), [])) or mean(everything) or 0.0
            lefts.append(left)
        return max(lefts)


def study_wide_stages(dvc_yaml: Path) -> set[str]:
    """dvc.yaml's stages that read the study's list of methods (maps, report): one per experiment."""
    try:
        stages = yaml.load(dvc_yaml.read_text(), Loader=Loader)["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return set()
    return {name for name, stage in stages.items() if "method_names" in (stage.get("params") or [])}


def stage_names(root: Path) -> list[str]:
    """Every stage of the pipeline in `root` (dvc.yaml's matrix expanded with its params), from DVC; none
    when the folder is gone (DVC removes a finished experiment's copy at any moment)."""
    try:
        proc = subprocess.run(
            ["dvc", "stage", "list", "--name-only"], cwd=root, capture_output=True, text=True, timeout=120
        )
    except FileNotFoundError:
        return []
    return proc.stdout.split() if proc.returncode == 0 else []
