"""The YAML dialect of params.yaml: PyYAML's safe loader, refusing the YAML 1.1 readings that surprise a
person editing the file (a key set twice, a leading zero, colons in a number), and `read_params`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from semisup.core.errors import UserError


class Empty:
    """A key written with no value (`epochs:`), at `line`: an empty section or a null where null is allowed,
    an error elsewhere (a person who deletes a value does not mean "null")."""

    def __init__(self, line: int):
        self.line = line

    def __repr__(self) -> str:
        return "no value"


class _Misread(Exception):
    """Something PyYAML accepts that a person editing params.yaml would not mean, at a line."""

    def __init__(self, node: yaml.Node, problem: str):
        super().__init__(f"line {node.start_mark.line + 1}: {problem}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing the YAML 1.1 readings that surprise people editing params.yaml:
    a key set twice in one section (YAML keeps the last), a leading zero (octal: 010 is 8), and colons
    in a number (base 60: 1:30 is 90). An empty value is `Empty`, for validation to judge."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _Misread(
                    key_node,
                    f"{key} is set twice in one section (also at line {seen[key]}); YAML would keep "
                    "only the last: delete one",
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(node.value).replace("_", "")
        value = super().construct_yaml_int(node)
        digits = text.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits.isdigit():
            raise _Misread(
                node,
                f"{node.value} starts with 0, which YAML reads as octal ({value}): write it without the 0",
            )
        if ":" in text:
            raise _Misread(
                node,
                f"{node.value} has a colon, which YAML reads as base 60 ({value}): quote it or write a number",
            )
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if ":" in str(node.value):
            raise _Misread(
                node,
                f"{node.value} has a colon, which YAML reads as base 60 ({value}): quote it or write a number",
            )
        return value

    def construct_yaml_null(self, node: yaml.ScalarNode) -> Empty | None:
        return Empty(node.start_mark.line + 1) if node.value == "" else None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor("tag:yaml.org,2002:null", _Loader.construct_yaml_null)


def read_params(path: str | Path = "params.yaml") -> Any:
    """The parsed YAML of a params file, unvalidated (a one-line `UserError` when missing, not YAML, or
    YAML that reads otherwise than a person means: see `_Loader`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found (run from the repository root, or pass --params)")
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506  (a SafeLoader)
    except _Misread as exc:
        raise UserError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
