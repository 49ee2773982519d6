"""dvc.yaml's code deps: each stage must list exactly the project files its command can run.

`python -m semisup.dvcdeps` lists every stage whose code deps miss a file its module imports
(semisup.codedeps.closure) or name one it never runs, and exits 1; `--fix` rewrites the code deps in
dvc.yaml (comments, order and the other deps kept). tests/test_codedeps.py runs the check.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from semisup.codedeps import PACKAGES, ROOT, closure

METHOD_ITEM = "${item.method}"
CODE_DIRS = tuple(f"{p}/" for p in PACKAGES)


def stage_module(cmd: str) -> str:
    """The module a stage's command runs: `python -m stages.pretrain ...` -> "stages.pretrain"."""
    words = cmd.split()
    if "-m" not in words[:-1]:
        raise ValueError(f"{cmd!r}: not `python -m <module> ...`")
    return words[words.index("-m") + 1]


def is_code(dep: str) -> bool:
    """A dep inside the project's code (semisup/, stages/), as opposed to data."""
    return dep.startswith(CODE_DIRS)


def stage_code(stage: dict, methods: Iterable[str], root: Path = ROOT) -> list[str]:
    """The code deps a dvc.yaml stage definition must list: its module's closure, sorted; in a stage whose
    matrix has a `method` axis, the method's own files written with ${item.method}.

    DVC can vary a dep only by substituting the item, so every method's closure must be the same files
    but for semisup/methods/<method>.py (a method module importing another method's is a ValueError).
    """
    module = stage_module(stage["cmd"])
    if "method" not in (stage.get("matrix") or {}):
        return sorted(closure(module, root=root))
    per_method = {m: closure(module, m, root) for m in methods}
    own = {m: f"semisup/methods/{m}.py" for m in per_method}
    first = next(iter(per_method))
    shared = per_method[first] - {own[first]}
    for method, files in per_method.items():
        extra = files - {own[method]} - shared
        if extra or shared - files:
            raise ValueError(
                f"{module} with method {method}: also runs {', '.join(sorted(extra or shared - files))}, "
                f"which {first} does not (or the reverse); a method module may import "
                "semisup.methods.common, not another method"
            )
    if any(own[m] in files for m, files in per_method.items()):
        shared.add(f"semisup/methods/{METHOD_ITEM}.py")
    return sorted(shared)


def check(dvc_yaml: dict, methods: Iterable[str], root: Path = ROOT) -> list[str]:
    """One line per stage whose code deps in dvc.yaml miss a file it runs or name one it never runs."""
    problems = []
    for name, stage in dvc_yaml["stages"].items():
        want = set(stage_code(stage, methods, root))
        have = {d for d in stage.get("deps", []) if is_code(d)}
        for dep in sorted(want - have):
            problems.append(f"{name}: dvc.yaml's deps miss {dep}, which the stage runs")
        for dep in sorted(have - want):
            problems.append(f"{name}: dvc.yaml's deps name {dep}, which the stage never runs")
    return problems


def fix(path: Path, methods: Iterable[str], root: Path = ROOT) -> bool:
    """Rewrite each stage's code deps in the dvc.yaml at `path` (comments kept); -> whether it changed."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order and style stay
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    text = path.read_text()
    doc = yaml.load(text)
    methods = list(methods)
    for stage in doc["stages"].values():
        deps = stage.get("deps", [])
        data = [d for d in deps if not is_code(d)]
        code = stage_code(stage, methods, root)
        if [d for d in deps if is_code(d)] != code:
            deps.clear()
            deps.extend(data + code)
    import io

    out = io.StringIO()
    yaml.dump(doc, out)
    if out.getvalue() == text:
        return False
    path.write_text(out.getvalue())
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m semisup.dvcdeps [--fix] [dvc.yaml]`: list the code-deps problems (exit 1), or fix them."""
    import argparse

    import yaml

    from semisup.methods import METHODS

    parser = argparse.ArgumentParser(description="Check (or --fix) dvc.yaml's code deps against the imports.")
    parser.add_argument("dvc_yaml", nargs="?", default=str(ROOT / "dvc.yaml"))
    parser.add_argument("--fix", action="store_true", help="rewrite the code deps in place")
    args = parser.parse_args(argv)
    path = Path(args.dvc_yaml)
    if args.fix:
        changed = fix(path, METHODS)
        print(f"{path}: {'code deps rewritten' if changed else 'code deps already complete'}")
        return 0
    problems = check(yaml.safe_load(path.read_text()), METHODS)
    for line in problems:
        print(line)
    if not problems:
        print(f"{path}: every stage's code deps are the files it runs")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
