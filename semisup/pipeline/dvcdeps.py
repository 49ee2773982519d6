"""dvc.yaml's code deps: each stage depends on the digest of exactly the project files its command can run.

The `code` stage (stages/code.py) depends on the code folders and writes one digest file per stage into
data/code/ (semisup.pipeline.codedeps.digest_files); every other stage lists its own digest file and no code
file: `data/code/<stage>.json`, or `data/code/pretrain-${item.method}.json` for a stage that trains a method
(or a configuration of one). `python -m semisup.pipeline.dvcdeps` lists every stage whose code deps are not
that, or a code stage whose folders miss a file some stage runs, and exits 1; `--fix` rewrites the code deps
in dvc.yaml (comments, order and the other deps kept). It also notes (exit 0) an `artifacts:` section that is
not one per run of params.yaml's study (semisup.pipeline.artifacts). tests/test_codedeps.py runs the check.
"""

from __future__ import annotations

from pathlib import Path

import click

from semisup.methods import METHODS
from semisup.pipeline.codedeps import (
    CODE_STAGE,
    DIGESTS,
    PACKAGES,
    ROOT,
    closure,
    digest_name,
    needs_method,
    stage_modules,
)

METHOD_ITEM = "${item.method}"


def stage_module(cmd: str) -> str:
    """The module a stage's command runs: `python -m stages.pretrain ...` -> "stages.pretrain"."""
    words = cmd.split()
    if "-m" not in words[:-1]:
        raise ValueError(f"{cmd!r}: not `python -m <module> ...`")
    return words[words.index("-m") + 1]


def is_code(dep: str) -> bool:
    """A dep on the project's code (a code folder, a file in one, or a digest file), as opposed to data."""
    return dep in PACKAGES or dep.startswith(tuple(f"{p}/" for p in (*PACKAGES, DIGESTS)))


def code_folders(root: Path = ROOT) -> list[str]:
    """The folders the code stage must depend on: those holding every file any stage can run."""
    files = closure(CODE_STAGE, root=root)
    for module in stage_modules(root):
        for method in METHODS if needs_method(module, root) else [None]:
            files |= closure(module, method, root)
    return sorted({f.split("/")[0] for f in files})


def stage_code(stage: dict, root: Path = ROOT) -> list[str]:
    """The code deps a dvc.yaml stage definition must list: for the code stage, the code folders; for any
    other, its digest file, written with ${item.method} where the stage trains a method."""
    module = stage_module(stage["cmd"])
    if module == CODE_STAGE:
        return code_folders(root)
    if not needs_method(module, root):
        return [f"{DIGESTS}/{digest_name(module)}"]
    if "method" not in (stage.get("matrix") or {}):
        raise ValueError(f"{module} trains a method: its stage needs a matrix axis `method`")
    return [f"{DIGESTS}/{digest_name(module, METHOD_ITEM)}"]


def check(dvc_yaml: dict, root: Path = ROOT) -> list[str]:
    """One line per stage whose code deps in dvc.yaml are not its digest file (the code stage: the code
    folders), and one if no stage writes the digests."""
    problems = []
    modules = {stage_module(stage["cmd"]) for stage in dvc_yaml["stages"].values()}
    if CODE_STAGE not in modules:
        problems.append(f"dvc.yaml: no stage runs {CODE_STAGE}, which writes the digests in {DIGESTS}")
    for name, stage in dvc_yaml["stages"].items():
        want = set(stage_code(stage, root))
        have = {d for d in stage.get("deps", []) if is_code(d)}
        code = stage_module(stage["cmd"]) == CODE_STAGE
        for dep in sorted(want - have):
            why = "which holds code the stages run" if code else "the digest of the code the stage runs"
            problems.append(f"{name}: dvc.yaml's deps miss {dep}, {why}")
        for dep in sorted(have - want):
            why = "the code folders alone" if code else f"its digest file alone ({', '.join(sorted(want))})"
            problems.append(f"{name}: dvc.yaml's deps name {dep}: its code deps are {why}")
    return problems


def fix(path: Path, root: Path = ROOT) -> bool:
    """Rewrite each stage's code deps in the dvc.yaml at `path` (comments kept); -> whether it changed."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order and style stay
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    text = path.read_text()
    doc = yaml.load(text)
    for stage in doc["stages"].values():
        deps = stage.get("deps", [])
        data = [d for d in deps if not is_code(d)]
        code = stage_code(stage, root)
        if [d for d in deps if is_code(d)] != code:
            deps.clear()
            deps.extend(data + code)
    out = io.StringIO()
    yaml.dump(doc, out)
    if out.getvalue() == text:
        return False
    path.write_text(out.getvalue())
    return True


@click.command(
    help="Check (or --fix) dvc.yaml's code deps against the imports; exit 1 if a stage's are wrong."
)
@click.argument("dvc_yaml", required=False, default=str(ROOT / "dvc.yaml"), type=click.Path(dir_okay=False))
@click.option("--fix", "rewrite", is_flag=True, help="Rewrite the code deps in place.")
def main(dvc_yaml: str, rewrite: bool) -> None:
    """`python -m semisup.pipeline.dvcdeps [--fix] [DVC_YAML]`: list the code-deps problems (exit 1), or fix them."""
    raise SystemExit(run(Path(dvc_yaml), rewrite))


def run(path: Path, rewrite: bool = False) -> int:
    """Print the code-deps problems of the dvc.yaml at `path` (and the artifacts notes), or fix them (`rewrite`).
    -> the exit status: 1 if a problem is left, else 0."""
    import yaml

    if rewrite:
        changed = fix(path)
        print(f"{path}: {'code deps rewritten' if changed else 'code deps already complete'}")
        return 0
    doc = yaml.safe_load(path.read_text())
    problems = check(doc)
    # The artifacts section lists the study's runs: a note, not a failure, when params.yaml's study has
    # moved on (a method added, `-S study.seeds=...`): the pipeline runs the same either way.
    if (path.parent / "params.yaml").is_file():
        from semisup.pipeline.artifacts import from_params
        from semisup.pipeline.artifacts import problems as artifact_problems

        for line in artifact_problems(doc, from_params(path.parent / "params.yaml")):
            print(f"note: {line}")
    for line in problems:
        print(line)
    if not problems:
        print(f"{path}: every stage depends on the digest of the code it runs")
    return 1 if problems else 0


if __name__ == "__main__":
    main()
