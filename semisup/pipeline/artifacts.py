"""dvc.yaml's `artifacts:` section: one model artifact per run of params.yaml's study, generated, checked.

DVC's top-level sections take `${...}` values but no matrix, so no template can list a run per method x
budget x seed. The section is written from params.yaml (`python -m semisup.pipeline.artifacts`) and checked by
`python -m semisup.pipeline.dvcdeps`, which says when method_names or the study changed and it is due again.
An artifact's name is its run's, lowercase with dashes (DVC's name rules): `paws-25-0`; its path the run's
model folder, models/<run>/; its labels the method, the method it runs, the budget and the seed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from semisup.data.subsets import budget_name, run_name

KEY = "artifacts"
HEADER = (
    "# One model artifact per run (docs/models.md): `dvc artifacts get <repo-url> <name>` fetches its model\n"
    "# folder. Written by `python -m semisup.pipeline.artifacts` from params.yaml's method_names x study; do not edit\n"
    "# by hand (`python -m semisup.pipeline.dvcdeps` says when it is out of date).\n"
)


def artifact_name(run: str) -> str:
    """A run's artifact name: lowercase, dashes for underscores (paws_mc-5-0 -> paws-mc-5-0)."""
    return run.lower().replace("_", "-")


def declared(
    method_names: list[str], runs_method: dict[str, str], budgets: list[Any], seeds: list[int]
) -> dict:
    """{artifact name: {path, type, desc, labels}} for every run of method_names x budgets x seeds;
    runs_method: each method or configuration -> the registered method it runs."""
    out: dict[str, dict[str, Any]] = {}
    for method in method_names:
        for budget in budgets:
            for seed in seeds:
                run = run_name(method, budget, seed)
                b = budget_name(budget)
                per_class = "every labeled image" if b in ("all", "None") else f"{b} labels per class"
                out[artifact_name(run)] = {
                    "path": f"models/{run}",
                    "type": "model",
                    "desc": f"{method} encoder, {per_class}, seed {seed}: its labeled bank, linear probe "
                    "and model card (semisup predict MODEL_DIR FOLDER)",
                    "labels": list(dict.fromkeys([method, runs_method.get(method, method)]))
                    + [f"budget-{b}", f"seed-{seed}"],
                }
    return out


def from_params(params_path: str | Path) -> dict:
    """The section params.yaml's study calls for."""
    from semisup.config import load_params

    params = load_params(params_path)
    runs_method = params.run_methods()
    return declared(
        list(params.method_names), runs_method, list(params.study.labeled_per_class), list(params.study.seeds)
    )


def render(artifacts: dict) -> str:
    """The section's text: the header comment, then `artifacts:` and its entries."""
    body = yaml.safe_dump({KEY: artifacts}, sort_keys=False, width=4096, default_flow_style=None)
    return HEADER + body


def replace_section(text: str, section: str) -> str:
    """dvc.yaml's text with its `artifacts:` section (and the header comment before it) replaced by
    `section`, or `section` appended when it has none; every other line kept."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"{KEY}:", line)), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + section
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    header = HEADER.splitlines(keepends=True)
    if lines[max(0, start - len(header)) : start] == header:
        start -= len(header)
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + tail if tail else "")


def problems(dvc_yaml: dict, expected: dict) -> list[str]:
    """One line if dvc.yaml's artifacts are not the ones params.yaml's study calls for."""
    have = dvc_yaml.get(KEY) or {}
    if have == expected:
        return []
    missing, extra = sorted(set(expected) - set(have)), sorted(set(have) - set(expected))
    changed = sorted(n for n in set(have) & set(expected) if have[n] != expected[n])
    kinds = (("missing", missing), ("not in the study", extra), ("different", changed))
    parts = [f"{what} {', '.join(names)}" for what, names in kinds if names]
    return [
        f"dvc.yaml: artifacts: {'; '.join(parts)}: run `python -m semisup.pipeline.artifacts` to write them"
    ]


def main(argv: list[str] | None = None) -> int:
    """`python -m semisup.pipeline.artifacts [--check] [dvc.yaml] [--params params.yaml]`: write or check the section."""
    import argparse

    parser = argparse.ArgumentParser(description="Write (or --check) dvc.yaml's artifacts from params.yaml.")
    parser.add_argument("dvc_yaml", nargs="?", default="dvc.yaml")
    parser.add_argument("--params", default=None, help="default: params.yaml beside dvc.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if the section is out of date")
    args = parser.parse_args(argv)
    path = Path(args.dvc_yaml)
    expected = from_params(args.params or path.parent / "params.yaml")
    text = path.read_text()
    found = problems(yaml.safe_load(text), expected)
    if args.check:
        print("\n".join(found) if found else f"{path}: artifacts: one per run of the study ({len(expected)})")
        return 1 if found else 0
    new = replace_section(text, render(expected))
    if new != text:
        from semisup.core.io import write_text

        write_text(path, new)
    print(
        f"{path}: artifacts: {len(expected)} model artifacts ({'rewritten' if new != text else 'unchanged'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
