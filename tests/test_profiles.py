"""The papers' study profiles (`make study PROFILE=paper`, `PROFILE=paper-extra`): each part validates, and
each configuration it defines differs from the run it is compared with in exactly the option it names."""

from __future__ import annotations

import dataclasses

import pytest

from drivers.profiles import (
    EXTRA_PARTS,
    FLOAT32,
    PAPER_PARTS,
    PAPER_PROFILES,
    PAPER_WITHOUT,
    PAWS_OPTIONS,
    POOLING,
    STUDY,
    parse_sets,
)
from semisup.config import parse_params, read_params, resolve_run, to_dict, with_overrides
from semisup.core.errors import UserError
from semisup.methods import METHODS
from tests.support import ROOT


def _params(part):
    return parse_params(with_overrides(read_params(ROOT / "params.yaml"), part.profile()))


def _differences(a, b) -> dict[str, tuple]:
    """Dotted keys whose values differ between two runs' params (methods: the run's method section)."""
    out = {}
    for section in ("train", "encoder", "augment", "data", "knn"):
        x, y = to_dict(getattr(a, section)), to_dict(getattr(b, section))
        out |= {f"{section}.{k}": (x[k], y[k]) for k in x if x[k] != y[k]}
    return out


def test_every_part_validates_and_shares_the_study_profiles_seeds():
    assert {p: [part.name for part in parts] for p, parts in PAPER_PROFILES.items()} == {
        "paper": ["methods-5", "methods-10", "methods-25", "paws-options-5", "paws-options-10"],
        "paper-extra": ["precision", "paws-ablation"],
    }
    for part in (*PAPER_PARTS, *EXTRA_PARTS):
        params = _params(part)
        assert params.study.seeds == (0, 1, 2) and params.train.epochs == int(STUDY["train.epochs"])
        assert list(params.method_names) == list(part.method_names)
    # The issue's study: the methods and the papers' configurations at 5, 10 and 25, each option at 5, 10.
    budgets: dict[str, list[str]] = {}
    for part in PAPER_PARTS:
        params = _params(part)
        for name in params.method_names:
            budgets.setdefault(name, []).extend(str(b) for b in params.study.labeled_per_class)
    for name in (*METHODS, "paws_paper", "suncet_paper"):
        assert set(budgets[name]) == {"5", "10", "25"}, name
    assert all(sorted(budgets[n], key=int) == ["5", "10"] for n in PAWS_OPTIONS)


def test_each_paws_option_is_paws_with_that_option_alone():
    parts = [(part, PAWS_OPTIONS) for part in PAPER_PARTS if part.name.startswith("paws-options")]
    for part, options in [*parts, (EXTRA_PARTS[1], POOLING)]:
        params = _params(part)
        paws = params.for_run("paws")
        for name, settings in options.items():
            run = params.for_run(name)
            own = {k: v for k, v in settings.items() if "." not in k}
            got = {
                f.name: (getattr(run.method(name), f.name), getattr(paws.method("paws"), f.name))
                for f in dataclasses.fields(run.method(name))
                if getattr(run.method(name), f.name) != getattr(paws.method("paws"), f.name)
            }
            assert {k: v[0] for k, v in got.items()} == own, name
            sections = {k: v for k, v in settings.items() if "." in k}
            assert {k: v[0] for k, v in _differences(run, paws).items()} == sections, name


def test_the_papers_paws_without_an_option_differs_from_it_in_that_option_alone():
    params = _params(EXTRA_PARTS[1])
    assert [str(b) for b in params.study.labeled_per_class] == ["5", "10"]
    assert {"paws", "paws_paper"} <= set(params.method_names)
    paper = params.for_run("paws_paper")
    for name, changes in PAPER_WITHOUT.items():
        run = params.for_run(name)
        own = {k: v for k, v in changes.items() if "." not in k}
        method = {
            f.name: getattr(run.method(name), f.name)
            for f in dataclasses.fields(run.method(name))
            if getattr(run.method(name), f.name) != getattr(paper.method("paws_paper"), f.name)
        }
        assert method == own, name
        assert {k: v[0] for k, v in _differences(run, paper).items()} == {
            k: v for k, v in changes.items() if "." in k
        }, name


def test_each_float32_run_is_its_method_in_float32():
    params = _params(EXTRA_PARTS[0])
    for name, method in FLOAT32.items():
        assert params.method(name) == params.method(method)
        assert _differences(params.for_run(name), params.for_run(method)) == {
            "train.mixed_precision": (False, "auto")
        }


def test_a_bad_setting_names_the_part_before_anything_runs():
    with pytest.raises(
        UserError, match=r"methods\.paws_views\.support_views: .*paper study's paws-options-5 part"
    ):
        parse_sets(
            ("+methods.paws_views.support_views=0",),
            PAPER_PARTS[3].profile(),
            "paper study's paws-options-5 part",
            True,
        )


def test_the_studys_multicrop_runs_take_cifar10s_setting_at_its_32_pixels():
    """The paper's study trains on digits at 32 px: multi-crop resolves to CIFAR10's official setting (6
    crops of 18 px at area (0.3, 0.75), the views raised to (0.75, 1.0)), the head's BatchNorm per
    resolution; without multi-crop the views keep the profile's augment.crop_scale."""
    methods, options, ablation = (_params(p) for p in (PAPER_PARTS[0], PAPER_PARTS[3], EXTRA_PARTS[1]))
    assert methods.data.image_size == 32
    for params, name in ((methods, "paws_paper"), (options, "paws_multicrop"), (ablation, "paws_paper")):
        run = resolve_run(params, name).views  # the run's view options, as the trainer reads them
        s = run.crop_settings(params.data.image_size)
        assert (s.preset, s.count, s.size, s.scale, s.global_scale) == (
            "cifar10",
            6,
            18,
            (0.3, 0.75),
            (0.75, 1.0),
        ), name
        assert run.multicrop_batchnorm == "per_resolution", name
    assert resolve_run(ablation, "paws_paper_no_multicrop").views.crops(params.data.image_size) is None
    assert ablation.for_run("paws_paper_no_multicrop").augment.crop_scale == (0.5, 1.0)
