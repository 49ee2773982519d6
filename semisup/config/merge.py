"""Named configurations: the sections of params.yaml's `methods` that name no method, each validated into a
`Configuration`; the params a run of one trains with (its overrides merged into the global sections); and
`dvc exp run -S`-style dotted overrides of a parsed params mapping."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml

from semisup.config.convert import build, convert
from semisup.config.dialect import Empty
from semisup.config.schema import NAME, OVERRIDABLE, Configuration, Params, check_train
from semisup.core.errors import UserError
from semisup.methods import METHODS


def split_configurations(raw: Any) -> tuple[Any, dict[Any, Any]]:
    """(raw without the configurations, {name: raw section} of each section of `methods` that names no
    method). A method's section that names a method of its own is the one name clash to refuse here."""
    if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict):
        return raw, {}
    sections = raw["methods"]
    for name in METHODS:
        if isinstance(sections.get(name), dict) and "method" in sections[name]:
            raise UserError(
                f"methods.{name}.method: {name} is a method, whose section holds its own params only; to "
                f"run it otherwise, name a configuration (methods.{name}_custom: {{method: {name}, ...}})"
            )
    methods = {k: v for k, v in sections.items() if k in METHODS}
    return {**raw, "methods": methods}, {k: v for k, v in sections.items() if k not in METHODS}


def configurations(sections: Mapping[Any, Any]) -> dict[str, Configuration]:
    """Each configuration of `methods`, validated: its name, method, params and overrides."""
    out: dict[str, Configuration] = {}
    taken = {name.lower(): name for name in METHODS}
    for name, raw in sections.items():
        key = f"methods.{name}"
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise UserError(
                f"{key}: not a name for a configuration: use letters, digits and _ (starting with a letter; "
                "no -: it names the runs <name>-<budget>-<seed>)"
            )
        if name.lower() in taken:  # one folder on a case-insensitive file system (models/<run>, ...)
            raise UserError(f"{key}: differs from {taken[name.lower()]} only in case: rename it")
        taken[name.lower()] = name
        if isinstance(raw, Empty) or raw is None or (isinstance(raw, dict) and "method" not in raw):
            raise UserError(
                f"{key}: not a method ({', '.join(METHODS)}); a configuration names the one it runs: "
                f"add method: <one of them>"
            )
        if not isinstance(raw, dict):
            raise UserError(f"{key}: expected a mapping of keys (method: ..., and its params), got {raw!r}")
        method = raw["method"]
        if method not in METHODS:  # (a configuration of a configuration too)
            raise UserError(f"{key}.method: {method!r} is not one of {', '.join(METHODS)}")
        cls = METHODS[method].params
        own = [f.name for f in dataclasses.fields(cls)]
        for k in raw:
            if k != "method" and k not in OVERRIDABLE and k not in own:
                allowed = ", ".join(["method", *own, *OVERRIDABLE])
                raise UserError(f"{key}.{k}: unknown key (allowed for a {method} configuration: {allowed})")
        overrides = {}
        for section, section_cls in OVERRIDABLE.items():
            if section in raw:
                given = raw[section] if isinstance(raw[section], dict) else {}
                built = convert(f"{key}.{section}", raw[section], section_cls)
                overrides[section] = {k: getattr(built, k) for k in given}
        params = build(key, {k: v for k, v in raw.items() if k in own}, cls)
        out[name] = Configuration(name, method, params, overrides)
    return out


def run_params(params: Params, name: str) -> Params:
    """The params a run of `name` trains with (Params.for_run): for a configuration, its params in place of
    its method's section and its train, encoder and augment keys in place of the global ones; a method's:
    `params` themselves."""
    config = params.configurations.get(name)
    if config is None:
        params.method_of(name)  # an unknown name: one line
        return params
    sections = {
        section: dataclasses.replace(getattr(params, section), **config.overrides.get(section, {}))
        for section in OVERRIDABLE
    }
    check_train(sections["train"], f"methods.{name}.train")
    methods = dataclasses.replace(params.methods, **{config.method: config.params})
    return dataclasses.replace(params, methods=methods, **sections)


def with_overrides(raw: Any, overrides: Mapping[str, Any]) -> dict:
    """A copy of a parsed params mapping with dotted `key: value` overrides, as `dvc exp run -S key=value`
    applies them: a string value is read as YAML (`"false"` -> False, `"[0.5,1.0]"` -> a list), and a
    missing section is created (so that validation names the unknown key). A key may start with Hydra's
    `+` or `++` (what `dvc exp run -S` needs to add a key params.yaml lacks)."""
    params = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.lstrip("+").split(".")
        node = params
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value
    return params


def with_method_params(params: Params, name: str, method_params: Any) -> Params:
    """`params` (as `run_params(params, name)` gives them) with run `name`'s params section replaced by
    `method_params`: its method's section, and a configuration's params too (both stand for the run)."""
    method = params.method_of(name)
    out = dataclasses.replace(params, methods=dataclasses.replace(params.methods, **{method: method_params}))
    if name in params.configurations:
        config = dataclasses.replace(params.configurations[name], params=method_params)
        out = dataclasses.replace(out, configurations={**params.configurations, name: config})
    return out
