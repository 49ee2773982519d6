"""The project files a DVC stage can execute: the transitive closure of its module's imports, and the
digest files of those closures that the stages depend on.

DVC reruns a stage only when one of its deps changes, so each stage must depend on exactly the `semisup/`
and `stages/` files its command can import. dvc.yaml does not list them: its `code` stage (stages/code.py)
depends on the two folders and writes, for every stage module, a digest file of its closure into
data/code/ (`digest_files`: each file's sha256, byte-identical while the closure's bytes are), and every
other stage depends on its own digest file, so DVC reruns a stage exactly when its closure changed
(`python -m semisup.pipeline.dvcdeps` checks dvc.yaml, tests/test_codedeps.py runs it). A pretrain
checkpoint's key holds the hash of the same digest file (`code_digest`), so changed code never resumes it.

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
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("semisup", "stages")
METHOD_PACKAGE = "semisup.methods"
STAGES_PACKAGE = "stages"
CODE_STAGE = "stages.code"  # the stage that writes the digest files; it depends on PACKAGES themselves
DIGESTS = "data/code"  # the code stage's output folder: one digest file per stage (and per pretrain name)


class NeedsMethod(ValueError):
    """A closure reaches the registry's import of a method by name, and no method was given."""


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
                raise NeedsMethod(f"{module}: imports a method's module by name, but no method was given")
            todo.extend(_with_parents(f"{METHOD_PACKAGE}.{method}"))
    if method is not None and module_file(f"{METHOD_PACKAGE}.{method}", root) is None and loads_method:
        raise ValueError(f"{METHOD_PACKAGE}.{method}: no such module in {root / 'semisup' / 'methods'}")
    return {p.relative_to(root).as_posix() for p in files.values()}


def file_digests(paths: Iterable[str], root: Path = ROOT) -> dict[str, str]:
    """{path: sha256 of its bytes} of the named files (relative to root), in path order."""
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in sorted(paths)}


def digest_text(paths: Iterable[str], root: Path = ROOT, method: str | None = None) -> str:
    """A digest file's text: the sha256 of every named file (and the method a pretrain name runs); the same
    bytes exactly while those files' bytes are the same."""
    body: dict = {"method": method} if method is not None else {}
    body["files"] = file_digests(paths, root)
    return json.dumps(body, indent=1) + "\n"


def code_digest(paths: Iterable[str], root: Path = ROOT, method: str | None = None) -> str:
    """sha256 of the digest file of the named files: changes with any byte of the code."""
    return hashlib.sha256(digest_text(paths, root, method).encode()).hexdigest()


def pretrain_code(method: str, root: Path = ROOT) -> str:
    """sha256 of the digest file of every project file a pretrain stage of registered method `method` can
    run: the bytes of data/code/pretrain-<name>.json, the dep of its stage in dvc.yaml, for any name that
    runs `method` (digest_files). The stage passes it to the library for its checkpoint keys."""
    return code_digest(closure("stages.pretrain", method, root), root, method=method)


def stage_modules(root: Path = ROOT) -> list[str]:
    """Every stage's module: each `stages/<name>.py` that runs as `python -m` (a `__main__` guard), but
    the code stage, which depends on the code itself."""
    modules = []
    for path in sorted((root / STAGES_PACKAGE).glob("*.py")):
        module = f"{STAGES_PACKAGE}.{path.stem}"
        if module != CODE_STAGE and '__name__ == "__main__"' in path.read_text():
            modules.append(module)
    return modules


def needs_method(module: str, root: Path = ROOT) -> bool:
    """Whether `module`'s closure reaches the registry's import of a method by name (pretrain's does)."""
    try:
        closure(module, root=root)
    except NeedsMethod:
        return True
    return False


def digest_name(module: str, name: str | None = None) -> str:
    """The digest file of a stage module, in DIGESTS: `embed.json`; `pretrain-<name>.json` per method or
    configuration for a module that runs a method."""
    stem = module.rpartition(".")[2]
    return f"{stem}-{name}.json" if name is not None else f"{stem}.json"


def digest_files(names: Mapping[str, str], root: Path = ROOT) -> dict[str, str]:
    """{digest file name: its text} for every stage module; `names`: each method or configuration a
    pretrain stage can run -> the registered method whose module it runs."""
    files = {}
    for module in stage_modules(root):
        if not needs_method(module, root):
            files[digest_name(module)] = digest_text(closure(module, root=root), root)
            continue
        for name, method in names.items():
            files[digest_name(module, name)] = digest_text(closure(module, method, root), root, method)
    return files
