"""A method's loss, its module imported by name when the method trains (never all methods at once).

This is the one place that imports a method's module: semisup.pipeline.codedeps reads this import as exactly
`semisup/methods/<method>.py`, so the digest a run's pretrain stage depends on (data/code/pretrain-<name>.json)
holds its own method's module and no other method's.
"""

from __future__ import annotations

import importlib
from typing import Any

from semisup.methods import LossFn, LossInputs, Method, check_inputs


def loss_fn(method: Method) -> LossFn:
    """`method`'s compute(inputs, params), checking the inputs against what the method declares first."""
    compute = method.compute
    if compute is None:
        compute = importlib.import_module(f"semisup.methods.{method.name}").compute

    def checked(inputs: LossInputs, params: Any):
        check_inputs(method, inputs)
        return compute(inputs, params)

    return checked
