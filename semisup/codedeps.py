"""The project files a DVC stage can execute: the transitive closure of its module's imports.

DVC reruns a stage only when one of its listed deps changes, so dvc.yaml must list, for every stage,
exactly the `semisup/` and `stages/` files its command can import (tests/test_codedeps.py checks it;
`python -m semisup.dvcdeps` checks them, `--fix` writes them into dvc.yaml). A pretrain
checkpoint's key holds a digest of the same files (`code_digest`), so changed code never resumes it.

What counts as an import, read from the source without running it: `import a.b` and `from a import b`
anywhere in a module (inside functions too, since they can run), except under `if TYPE_CHECKING:`
(never at run time); importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`. The one dynamic
import, the registry loading a method's module by name (`importlib.import_module(f"semisup.methods.
{name}")`), stands for the module of the method a stage runs: `semisup/methods/<method>.py`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("semisup", "stages")
METHOD_PACKAGE = "semisup.methods"


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of project module `name` (a package's __init__.py); None outside the project."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _loads_method_module(call: ast.Call) -> bool:
    """`importlib.import_module(f"semisup.methods.{...}")`: the registry loading a method by name."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name != "import_module" or not call.args or not isinstance(call.args[0], ast.JoinedStr):
        return False
    head = call.args[0].values[0] if call.args[0].values else None
    return isinstance(head, ast.Constant) and str(head.value) == METHOD_PACKAGE + "."


class _Imports(ast.NodeVisitor):
    def __init__(self, package: str):
        self.package = package  # the package a relative import is relative to
        self.names: set[str] = set()
        self.loads_method = False

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # annotations only: never runs
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parent = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join(parent + ([node.module] if node.module else []))
        self.names.add(base)
        # `from a import b` imports the module a.b when b is one (module_file tells, later).
        self.names.update(f"{base}.{alias.name}" for alias in node.names)

    def visit_Call(self, node: ast.Call) -> None:
        self.loads_method |= _loads_method_module(node)
        self.generic_visit(node)


def _scan(path: Path, module: str) -> tuple[frozenset[str], bool]:
    """(the modules `path` imports, whether it imports a method's module by name)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _parse(path.read_bytes(), package)


@functools.lru_cache(maxsize=512)
def _parse(source: bytes, package: str) -> tuple[frozenset[str], bool]:
    visitor = _Imports(package)
    visitor.visit(ast.parse(source))
    return frozenset(visitor.names), visitor.loads_method


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def closure(module: str, method: str | None = None, root: Path = ROOT) -> set[str]:
    """Paths (relative to root, POSIX) of every project file that running `python -m module` can execute.

    `method`: the method the stage runs, standing for the registry's import of a method by name; a
    closure that reaches that import without a method is a ValueError.
    """
    files: dict[str, Path] = {}
    todo = _with_parents(module)
    loads_method = False
    while todo:
        name = todo.pop()
        path = module_file(name, root)
        if path is None or name in files:
            continue
        files[name] = path
        imported, dynamic = _scan(path, name)
        loads_method |= dynamic
        for other in imported:
            todo.extend(_with_parents(other))
        if dynamic:
            if method is None:
                raise ValueError(f"{module}: imports a method's module by name, but no method was given")
            todo.extend(_with_parents(f"{METHOD_PACKAGE}.{method}"))
    if method is not None and module_file(f"{METHOD_PACKAGE}.{method}", root) is None and loads_method:
        raise ValueError(f"{METHOD_PACKAGE}.{method}: no such module in {root / 'semisup' / 'methods'}")
    return {p.relative_to(root).as_posix() for p in files.values()}


def code_digest(paths: Iterable[str], root: Path = ROOT) -> str:
    """sha256 of the named files' paths and contents, in path order: changes with any byte of the code."""
    digest = hashlib.sha256()
    for rel in sorted(paths):
        data = (root / rel).read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
