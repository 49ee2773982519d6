"""A run's curves while it trains: dvclive's files in <live>/<run>/, beside a dvc.yaml of their own, so that
`dvc exp show` and `dvc plots show` see each epoch as it ends (DVC reads every dvc.yaml git does not ignore).

Not a stage output: the run's outputs still appear together when it ends, and then this folder goes. A
killed run's folder stays until the next pretrain in the same workspace starts (each folder is locked
while its writer lives, as semisup.core.io's temporary folders are), and a resumed run writes it again from
its checkpoint's history, so its curves never hold an epoch twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from dvclive import Live

from semisup.core.errors import UserError
from semisup.core.io import write_text

# What DVC reads of a live folder: the run's name and epochs (params), the last epoch's numbers (metrics:
# step is the epoch) and one curve per number (plots), as dvclive's own dvc.yaml would declare them.
DVCYAML = {
    "params": ["params.yaml"],
    "metrics": ["metrics.json"],
    "plots": [{"plots/metrics": {"x": "step"}}],
}


def log_epoch(live: Live, record: dict[str, Any]) -> None:
    """Log one epoch's record ({"epoch": e, "loss": ..., "knn_k20": ...}) at step e; write the summary."""
    live.step = record["epoch"]
    for key, value in record.items():
        if key != "epoch":
            live.log_metric(key, float(value))
    live.make_summary()


def _holder(path: Path) -> int | None:
    """A non-blocking exclusive lock of folder `path`; None when a living writer holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_stale(root: Path) -> list[Path]:
    """Remove the folders under `root` that no living run holds (killed runs'). -> what was removed."""
    removed = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        fd = _holder(folder)
        if fd is not None:
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)
            removed.append(folder)
    return removed


class LiveCurves:
    """dvclive's metrics.json and plots/metrics/<metric>.tsv of one running run in `folder` (<live>/<run>),
    written as each epoch ends; `close()` removes the folder once the run's outputs are written."""

    def __init__(self, folder: str | os.PathLike, epochs: int, history: Sequence[dict[str, Any]]):
        self.dir = Path(folder)
        try:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(self.dir.parent)
            self.dir.mkdir()
        except FileExistsError:
            raise UserError(
                f"{self.dir}: another pretrain of {self.dir.name} is writing here: wait for it or stop it"
            ) from None
        self._fd = _holder(self.dir)
        self._live = Live(str(self.dir), dvcyaml=False, save_dvc_exp=False, report=None)
        self._live.log_params({"run": self.dir.name, "epochs": epochs})
        for record in history:  # a resumed run: its checkpoint's epochs, once each
            log_epoch(self._live, record)
        if history:
            self._declare()

    def log(self, record: dict[str, Any]) -> None:
        """Append one finished epoch to the curves and the summary."""
        log_epoch(self._live, record)
        self._declare()

    def _declare(self) -> None:
        # Only once metrics.json exists: a declared file that is missing is an error in `dvc metrics show`.
        write_text(self.dir / "dvc.yaml", yaml.safe_dump(DVCYAML, sort_keys=False))

    def close(self, finished: bool) -> None:
        """Release the folder; remove it (and <live>/ when left empty) when the run `finished`."""
        if finished:
            shutil.rmtree(self.dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.dir.parent.rmdir()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
