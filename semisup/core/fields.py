"""Dataclass fields with validation rules, for the params dataclasses (checked by semisup.config)."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def rules(**checks: Any) -> dict:
    """Field metadata: ge/gt/le/lt bounds, `pair` (ordered 2-tuple), `nonempty`."""
    return {"rules": checks}


def param(default: Any, **checks: Any) -> Any:
    """A field with `default` (a list or tuple is copied per instance) and validation `checks`."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=rules(**checks))
    return field(default=default, metadata=rules(**checks))
