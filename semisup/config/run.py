"""One run resolved once, at its stage's boundary: a `RunSpec` holds what the run's name means in
params.yaml (its method or configuration, the params it trains with, its seed and label budget, its view
options, and once fitted, the batches the few-labels rule gave it), and the stage passes it down to
preflight and training instead of the name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semisup.config.merge import with_method_params
from semisup.config.schema import Params
from semisup.methods import METHODS, Method, ViewOptions, view_options

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class RunSpec:
    """What one run trains with, resolved from its name once (`resolve_run`)."""

    run: str  # as its stages name it: METHOD-BUDGET-SEED (paws-25-0) or METHOD alone
    name: str  # the method or configuration it trains (params.yaml's methods.<name>)
    method: Method  # the registered method that runs
    params: Params  # Params.for_run(name) with the run's seed (and, once fitted, its fitted batches)
    method_params: Any  # its params section: params.method(name)
    views: ViewOptions  # view_options(method_params)
    budget: int | None = None  # labels per class of its subset; None: every labeled image
    labeled_ids: tuple[int, ...] | None = (
        None  # its labeled subset's positions in the labeled split; None: all
    )
    fitted: Any = (
        None  # semisup.training.few_labels.Fitted once the few-labels rule ran (fit_spec); None before
    )

    @property
    def seed(self) -> int:
        """The run's seed: its name's, or params.yaml's for a run named by its method alone."""
        return self.params.seed

    def on_subset(self, labeled_ids: Sequence[int]) -> RunSpec:
        """This run trained on `labeled_ids` (positions in the labeled split) instead."""
        return dataclasses.replace(self, labeled_ids=tuple(int(i) for i in labeled_ids))

    def with_method_params(self, method_params: Any, fitted: Any = None) -> RunSpec:
        """This run with its params section replaced (in `params` too, where the trainer reads it)."""
        params = with_method_params(self.params, self.name, method_params)
        views = view_options(method_params)
        return dataclasses.replace(
            self, params=params, method_params=method_params, views=views, fitted=fitted
        )


def resolve_run(
    params: Params,
    name: str,
    *,
    run: str | None = None,
    seed: int | None = None,
    budget: int | None = None,
    labeled_ids: Sequence[int] | None = None,
) -> RunSpec:
    """Run `run` (default: `name`) of method or configuration `name` with `seed` (None: params.yaml's) on
    `labeled_ids` (None: every labeled image) as one record; an unknown name is one line, here."""
    params = params.for_run(name)
    if seed is not None:
        params = dataclasses.replace(params, seed=seed)
    method_params = params.method(name)
    return RunSpec(
        run=run or name,
        name=name,
        method=METHODS[params.method_of(name)],
        params=params,
        method_params=method_params,
        views=view_options(method_params),
        budget=budget,
        labeled_ids=None if labeled_ids is None else tuple(int(i) for i in labeled_ids),
    )
