"""What every command reads the same way (the stages and `semisup`): the `--params` and `--run` options and
params.yaml loaded and validated. The commands' side of the boundary: the library's modules never import it."""

from __future__ import annotations

import click

from semisup.config import Params, load_params
from semisup.core.errors import UserError

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The params file.",
)


run_option = click.option(
    "--run",
    "run",
    required=True,
    metavar="METHOD-BUDGET-SEED",
    help="The run: METHOD-BUDGET-SEED as in its stage names (paws-25-0, paws-all-0), or METHOD alone "
    "(every labeled image, params.yaml's seed); METHOD is a method or a configuration (a section of "
    "params.yaml's methods). Reads and writes under this name.",
)


def load(params_path: str) -> Params:
    """Load and validate the params file (a UserError on any mistake)."""
    params = load_params(params_path)
    check_budget_names(params.study.labeled_per_class)
    return params


def check_budget_names(budgets: tuple[int | str | None, ...]) -> None:
    """A UserError for a null label budget: DVC's matrix would name its runs M-None-S (pretrain@paws-None-0)
    where the splits, the report and the model folders say all."""
    for i, budget in enumerate(budgets):
        if budget is None:
            raise UserError(
                f"study.labeled_per_class[{i}]: null names its runs METHOD-None-SEED in DVC's stages "
                "(pretrain@paws-None-0); write all for the whole labeled split"
            )
