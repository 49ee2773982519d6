"""params.yaml -> frozen, validated dataclasses, one module per job:

- schema.py: the sections' dataclasses, `Params` and `Configuration`, the rules that span keys, `to_dict`;
- convert.py: the generic validator that checks a parsed value against a field's type and rules;
- dialect.py: the YAML dialect (`read_params`: YAML read as a person editing params.yaml means it);
- merge.py: named configurations of a method, their overrides for a run (`Params.for_run`), and
  `dvc exp run -S`-style overrides (`with_overrides`);
- parse.py: the whole file validated (`parse_params`, `load_params`);
- run.py: one run resolved once at a stage's boundary (`RunSpec`).

Every mistake (unknown key, wrong type, value out of range) becomes a `UserError` whose one-line message
names the key, the value and what is allowed, before any compute starts. Only `stages/` call `load_params`;
the library takes values.
"""

from semisup.config.dialect import Empty, read_params
from semisup.config.merge import with_overrides
from semisup.config.parse import load_params, parse_params
from semisup.config.run import RunSpec, resolve_run
from semisup.config.schema import (
    NAME,
    OVERRIDABLE,
    AugmentParams,
    Configuration,
    DataParams,
    EmbedParams,
    EncoderParams,
    KnnParams,
    LinearParams,
    MethodsParams,
    Params,
    StudyParams,
    TrainParams,
    to_dict,
)

__all__ = [
    "NAME",
    "OVERRIDABLE",
    "AugmentParams",
    "Configuration",
    "DataParams",
    "EmbedParams",
    "Empty",
    "EncoderParams",
    "KnnParams",
    "LinearParams",
    "MethodsParams",
    "Params",
    "RunSpec",
    "StudyParams",
    "TrainParams",
    "load_params",
    "parse_params",
    "read_params",
    "resolve_run",
    "to_dict",
    "with_overrides",
]
