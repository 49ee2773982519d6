"""A stage's outputs as one set: written into a temporary sibling folder, then renamed into place together.

Readers never see a half-written output and a failed stage leaves the previous outputs as they were.
Each temporary folder is locked (flock) while its writer lives; the kernel drops the lock when the
writer dies, even by SIGKILL, so the next run removes every unlocked leftover of the same outputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from semisup.core.errors import UserError, fault_message

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _lock(path: Path) -> int | None:
    """Take the exclusive lock of `path`; None if it vanished meanwhile (a cleaner removed it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except FileNotFoundError:
        pass
    os.close(fd)
    return None


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove the temporary folders of `name` in `parent` that no living writer holds. -> what was removed."""
    removed = []
    for tmp in parent.glob(f".{name}.*{TMP_SUFFIX}"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a running writer (another `dvc exp` of the queue, say) still owns it
            continue
        try:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
        finally:
            os.close(fd)
    return removed


def _new_tmp_dir(parent: Path, name: str) -> tuple[Path, int]:
    """A fresh, locked, ordinary-permission temporary folder `.name.XXXX.tmp` in parent. -> (path, lock fd)."""
    while True:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=TMP_SUFFIX, dir=parent))
        fd = _lock(tmp)
        if fd is not None:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; what it holds is ordinary output
            return tmp, fd


def _common_parent(paths: Sequence[Path]) -> Path:
    parents = {p.parent for p in paths}
    if len(parents) == 1:
        return parents.pop()
    return Path(os.path.commonpath([str(p.parent.absolute()) for p in paths]))


def _commit(staged: list[tuple[Path, Path]], old_dir: Path) -> None:
    """Move every staged path onto its output; on a failure, put back what was there and re-raise."""
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for i, (new, out) in enumerate(staged):
            old = None
            if out.exists() or out.is_symlink():
                old = old_dir / str(i)
                os.replace(out, old)  # a folder cannot be replaced while it holds files: move it aside
            done.append((new, out, old))
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, out)
    except BaseException:
        for new, out, old in reversed(done):
            if out.exists() and not new.exists():
                with contextlib.suppress(OSError):
                    os.replace(out, new)
            if old is not None:
                with contextlib.suppress(OSError):
                    os.replace(old, out)
        raise


@contextlib.contextmanager
def output_set(*outputs: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield one temporary path per output (file or folder, not yet created); on success move all into place.

    The temporary paths live in one locked folder beside the outputs (in their common parent), so the
    renames stay on one file system. On any exception nothing is moved and the folder is removed; a
    fault of the machine (disk full, read-only, no permission) becomes a one-line UserError naming the
    outputs. Leftovers of killed runs of the same outputs are removed first.
    """
    outs = [Path(o) for o in outputs]
    parent = _common_parent(outs)
    name = outs[0].name
    created = _missing_ancestors(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale(parent, name)
        tmp, fd = _new_tmp_dir(parent, name)
    except OSError as exc:
        _remove_empty(created)
        raise _fault(exc, outs) from None
    ok = False
    try:
        staged = [tmp / str(i) / o.name for i, o in enumerate(outs)]
        for path in staged:
            path.parent.mkdir()
        try:
            yield staged
            missing = [out for new, out in zip(staged, outs, strict=True) if not new.exists()]
            if missing:
                raise RuntimeError(f"output_set: the block did not write {', '.join(map(str, missing))}")
            (tmp / "old").mkdir()
            _commit(list(zip(staged, outs, strict=True)), tmp / "old")
            ok = True
        except Exception as exc:
            fault = _fault(exc, outs)
            if fault is None:
                raise
            raise fault from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)
        if not ok:
            _remove_empty(created)  # a failed stage leaves no trace, not even the folders it made


@contextlib.contextmanager
def scratch_file(parent: str | os.PathLike, name: str, nbytes: int, what: str) -> Iterator[Path]:
    """Yield a locked temporary file `.name.XXXX.tmp` in `parent` with `nbytes` allocated; removed on exit.

    The space is allocated up front (posix_fallocate), so a full disk is a one-line error now, not a
    SIGBUS when a memory map of the file is written later. Leftovers of killed runs (unlocked) are
    removed first, as `output_set` removes its temporary folders. `what` names the file in errors.
    """
    parent = Path(parent)
    created = _missing_ancestors(parent)
    fd, path = -1, None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale(parent, name)
        fd, raw = tempfile.mkstemp(prefix=f".{name}.", suffix=TMP_SUFFIX, dir=parent)
        path = Path(raw)
        fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else knows the name yet: this never waits
        if nbytes > 0:
            os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        _drop_scratch(fd, path, created)
        fault = fault_message(exc, f"{parent} ({what}, {_mib(nbytes)})")
        if fault is None:
            raise
        raise fault from None
    try:
        yield path
    finally:
        _drop_scratch(fd, path, created)


def _drop_scratch(fd: int, path: Path | None, created: list[Path]) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()
    if fd >= 0:
        os.close(fd)
    _remove_empty(created)


def _missing_ancestors(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fault(exc: BaseException, outs: list[Path]) -> Exception | None:
    """The one-line UserError for a machine fault met while writing `outs`, else None."""
    where = str(outs[0]) if len(outs) == 1 else f"{outs[0].parent} ({', '.join(o.name for o in outs)})"
    return fault_message(exc, where)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    `suffix` is kept for callers that need the temporary file to end like the output (.npz, .keras).
    """
    path = Path(path)
    with output_set(path) as (tmp,):
        real = tmp.with_name(tmp.name + suffix) if suffix and not tmp.name.endswith(suffix) else tmp
        yield real
        if real != tmp:
            os.replace(real, tmp)
        # Files created through mkstemp-like calls may be private; give the output ordinary permissions.
        with contextlib.suppress(OSError):
            tmp.chmod(0o666 & ~_umask())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Write `arrays` as an .npz file atomically, its bytes a function of the arrays alone (np.savez stamps
    each entry with the time of writing, so the same arrays would give a new file for DVC)."""
    import io
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue()
            )


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def probe_writable(folder: str | os.PathLike) -> None:
    """Create (and remove) a file in `folder`, or the nearest existing folder above it; UserError if that fails.

    Permission bits alone do not tell (root writes anywhere, a read-only mount refuses root): try it.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-probe.", suffix=TMP_SUFFIX):
            pass
    except OSError as exc:
        fault = fault_message(exc, str(folder))
        if fault is None:
            raise
        raise fault from None


def check_free_space(folder: str | os.PathLike, need_bytes: int, what: str) -> None:
    """UserError when the file system of `folder` has less than `need_bytes` free for `what`."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise UserError(
            f"{folder}: {_mib(free)} free, about {_mib(need_bytes)} needed for {what}: "
            "free some space (or write elsewhere), then rerun"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
