"""A run's per-epoch checkpoints and what they are valid for (`run_key`): outside DVC's outputs, which DVC
deletes before a stage runs, in one stable place per run and worker, so a killed run resumes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from semisup.config import Params, RunSpec, resolve_run, to_dict
from semisup.core.io import atomic_path, write_json

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (params, manifest digests, seed)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def manifest_digest(shard_dir: str | Path) -> str:
    """sha256 of manifest.json, which records every shard's sha256: a stand-in for the data itself."""
    return hashlib.sha256((Path(shard_dir) / "manifest.json").read_bytes()).hexdigest()


def run_key(
    method: str,
    params: Params,
    shard_dir: str | Path,
    mixed: bool,
    labeled_ids: Sequence[int] | None = None,
    *,
    code: str,
) -> str:
    """What a checkpoint of `method` (a method or a configuration) is valid for: spec_key of the run of
    `method` with `params` (Params.for_run: a configuration's own params and overrides) on `labeled_ids`."""
    return spec_key(resolve_run(params, method, labeled_ids=labeled_ids), shard_dir, mixed, code=code)


def spec_key(spec: RunSpec, shard_dir: str | Path, mixed: bool, *, code: str) -> str:
    """What a checkpoint of the resolved run `spec` is valid for: the params pretrain@M depends on (see
    dvc.yaml) as the run takes them, the code it runs (`code`: the hash of its digest file, which the stage
    passes in: semisup.pipeline.codedeps.pretrain_code), the data, the seed, the precision
    `train.mixed_precision` resolved to (auto may resolve differently elsewhere), and the labeled subset
    trained on (None: every labeled image)."""
    params = spec.params
    parts = [
        code,
        spec.name,
        to_dict(spec.method_params),
        to_dict(params.train),
        to_dict(params.augment),
        to_dict(params.encoder),
        params.knn.k,
        params.knn.monitor_every,
        params.seed,
        manifest_digest(shard_dir),
        mixed,
    ]
    if spec.labeled_ids is not None:
        ids = np.asarray(list(spec.labeled_ids), dtype=np.int64)
        parts.append(hashlib.sha256(ids.tobytes()).hexdigest())
    return fingerprint(*parts)


def run_folder(method: str, key: str, worker: int) -> str:
    """A run's checkpoint folder under the root: the chief's `<method>-<key>`, worker i's `.../worker-i`
    inside it (on its own machine, or beside the chief's on a shared filesystem)."""
    return f"{method}-{key}" + (f"/worker-{worker}" if worker > 0 else "")


class Checkpoints:
    """Per-epoch checkpoints in `root/<key>/`, outside DVC's outputs (DVC deletes those first).

    A checkpoint is the weights of every model and the optimizer (weights-EEEEE.npz) plus state.json,
    which names the finished epoch, the weights files kept and the per-epoch history; each is written
    atomically. `keep` > 1 keeps the last epochs' weights too: the workers of a cluster resume from the
    last epoch every one of them saved, which may be one before a worker's own last.

    `hold()` takes the folder for this process: a second process training the same run at the same time (the
    same run in two experiments of a study, whose queue workers share one checkpoint root) keeps none.
    """

    def __init__(self, root: str | Path, key: str, keep: int = 1):
        self.root = Path(root)
        self.dir = self.root / key
        self.keep = max(1, keep)
        self.held = True  # False: another process holds the folder; this one neither saves nor resumes
        self._lock: int | None = None

    def hold(self) -> bool:
        """Take the folder for this process's lifetime (an advisory lock, released when the process ends,
        however it ends); -> False, and no checkpoints kept, when another process holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.held = False
            log.warning("%s: another process trains this run now; this one keeps no checkpoints", self.dir)
            return False
        self._lock = fd
        return True

    def release(self) -> None:
        """Let the folder go (the run stopped or finished in this process; a later run may hold it)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def save(self, epoch: int, history: list[dict], models: dict[str, keras.Model], optimizer) -> None:
        if not self.held:
            return
        arrays = {}
        for name, model in models.items():
            for i, w in enumerate(model.weights):
                arrays[f"{name}/{i}"] = np.asarray(w)
        for i, v in enumerate(optimizer.variables):
            arrays[f"optimizer/{i}"] = np.asarray(v)
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = f"weights-{epoch:05d}.npz"
        with atomic_path(self.dir / weights, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        kept = [k for k in self._state().get("kept", []) if k["epoch"] < epoch][-(self.keep - 1) :]
        kept = (kept if self.keep > 1 else []) + [{"epoch": epoch, "weights": weights}]
        # state.json names the weights files: a crash between the two writes leaves the previous epoch valid.
        state = {"epoch": epoch, "weights": weights, "kept": kept, "history": history}
        write_json(self.dir / "state.json", state)
        names = {k["weights"] for k in kept}
        for old in self.dir.glob("weights-*.npz"):
            if old.name not in names:
                old.unlink(missing_ok=True)

    def _state(self) -> dict:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def epochs(self) -> list[int]:
        """The finished epochs whose weights are on disk, oldest first."""
        if not self.held:
            return []
        state = self._state()
        kept = state.get("kept", [{"epoch": state["epoch"], "weights": state["weights"]}] if state else [])
        return [k["epoch"] for k in kept if (self.dir / k["weights"]).exists()]

    def load(
        self,
        models: dict[str, keras.Model],
        optimizer,
        variables: list,
        epoch: int | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ) -> tuple[int, list[dict]] | None:
        """Restore finished `epoch` (default: the last) into `models` and `optimizer`; None when not on disk.

        The optimizer's slots are built inside `strategy.scope()`: built elsewhere they would not be
        mirrored, and a distributed step could not update them.
        """
        if not self.held:
            return None
        state = self._state()
        kept = {k["epoch"]: k["weights"] for k in state.get("kept", [])}
        if state and not kept:
            kept = {state["epoch"]: state["weights"]}
        epoch = state.get("epoch") if epoch is None else epoch
        if epoch not in kept or not (self.dir / kept[epoch]).exists():
            return None
        with np.load(self.dir / kept[epoch]) as arrays:
            for name, model in models.items():
                for i, w in enumerate(model.weights):
                    w.assign(arrays[f"{name}/{i}"])
            with (strategy or tf.distribute.get_strategy()).scope():
                optimizer.build(variables)
            for i, v in enumerate(optimizer.variables):
                v.assign(arrays[f"optimizer/{i}"])
        return int(epoch), [r for r in state["history"] if r["epoch"] <= epoch]

    def clear(self) -> None:
        """Remove this run's checkpoints, and the folders of a nested key (worker-i's) left empty."""
        if not self.held:
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()
        for parent in self.dir.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty: another worker's checkpoints share the folder
                break
