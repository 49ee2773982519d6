"""The versions of the libraries that compute a run's numbers, recorded beside its metrics.

Upgrading a library is no reason for DVC to rerun a stage (it cannot see installed packages), so two
commits' metrics may differ because of an upgrade: every run records what computed it, and the report
shows it once.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable, Mapping

LIBRARIES = ("tensorflow", "keras", "numpy", "scikit-learn", "dvc")


def library_versions() -> dict[str, str]:
    """{"python": ..., "tensorflow": ..., ...}: this process's Python and installed library versions."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def merge(records: Iterable[Mapping[str, str]]) -> dict[str, list[str]]:
    """Every version seen of each library across `records`, sorted: {"numpy": ["2.1.0"], ...}."""
    seen: dict[str, set[str]] = {}
    for record in records:
        for name, version in record.items():
            seen.setdefault(name, set()).add(str(version))
    order = ["python", *LIBRARIES]
    names = sorted(seen, key=lambda n: (order.index(n) if n in order else len(order), n))
    return {name: sorted(seen[name]) for name in names}


def describe(merged: Mapping[str, Iterable[str]]) -> str:
    """One line: "python 3.11.7, tensorflow 2.21.0, ..."; a library runs computed with several versions
    of reads "numpy 1.26.4 and 2.1.0 (runs differ)"."""
    parts = []
    for name, versions in merged.items():
        versions = list(versions)
        parts.append(f"{name} {' and '.join(versions)}" + (" (runs differ)" if len(versions) > 1 else ""))
    return ", ".join(parts)
