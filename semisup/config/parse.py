"""params.yaml -> frozen, validated `Params`: the file read in its YAML dialect, every section built and
checked, the named configurations split off `methods` and validated, and the rules that span keys.

Every mistake (unknown key, wrong type, value out of range) becomes a `UserError` whose one-line message
names the key, the value and what is allowed, before any compute starts.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from semisup.config.convert import build
from semisup.config.dialect import read_params
from semisup.config.merge import configurations as _configurations
from semisup.config.merge import split_configurations
from semisup.config.schema import Params, check_study, check_train
from semisup.core.errors import UserError
from semisup.methods import METHODS


def parse_params(raw: Any) -> Params:
    """Validate a parsed params mapping and return frozen `Params`."""
    if isinstance(raw, dict) and "configurations" in raw:
        raise UserError("configurations: unknown key (a configuration is a section of methods)")
    raw, configured = split_configurations(raw)
    params = build("", raw, Params)
    configurations = _configurations(configured)
    params = dataclasses.replace(params, configurations=configurations)
    _check_method_names(params)
    check_train(params.train, "train")
    for name in configurations:
        if name in params.method_names:  # (another is checked when a stage runs it: for_run)
            params.for_run(name)  # its sections with its overrides, each checked as the global one is
    check_study(params.study)
    return _with_data_path(params)


def _check_method_names(params: Params) -> None:
    """Each name of method_names is a method or a configuration, listed once."""
    configurations = params.configurations
    for name in params.method_names:
        if name not in METHODS and name not in configurations:
            raise UserError(
                f"method_names: {name!r} is not a method ({', '.join(METHODS)}) nor a configuration "
                f"(a section of methods with method: <one of them>; here: {', '.join(configurations) or 'none'})"
            )
    repeated = sorted({n for n in params.method_names if params.method_names.count(n) > 1})
    if repeated:  # DVC's matrix would drop the repeat without a word
        raise UserError(f"method_names: {', '.join(repeated)} listed twice: list each method once")


def _with_data_path(params: Params) -> Params:
    """The folder source has a path; a path starting with ~ expanded as a shell would (~/images, ~user/images)."""
    data = params.data
    if data.source == "folder" and not data.path:
        raise UserError(
            "data.path: the folder source needs a path (a directory with one sub-folder per class)"
        )
    if data.path and data.path.startswith("~"):
        params = dataclasses.replace(
            params, data=dataclasses.replace(data, path=os.path.expanduser(data.path))
        )
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem is a one-line `UserError`."""
    return parse_params(read_params(path))
