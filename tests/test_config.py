"""params.yaml validation: every user mistake is a one-line error naming the key, value and what is allowed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from semisup.config import Params, load_params, parse_params, to_dict, with_overrides
from semisup.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def committed_params(tmp_path: Path) -> Path:
    """The params.yaml of the commit checked out, not the workspace's (experiments edit that one)."""
    proc = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True)
    if proc.returncode != 0:  # not a git checkout (an sdist): the file is all there is
        return ROOT / "params.yaml"
    (tmp_path / "params.yaml").write_bytes(proc.stdout)
    return tmp_path / "params.yaml"


def test_repository_params_load_and_match_reference_recipe(tmp_path):
    p = load_params(committed_params(tmp_path))
    assert p.data.source == "stl10" and p.data.image_size == 96
    assert (p.encoder.filters, p.encoder.depth, p.encoder.embedding_dim) == (128, 4, 128)
    assert (p.methods.suncet.unlabeled_batch, p.methods.suncet.labeled_batch) == (250, 250)
    assert (p.methods.infonce.unlabeled_batch, p.methods.infonce.labeled_batch) == (500, 25)
    assert p.methods.paws.sharpen_temperature == 0.25 and p.methods.paws.temperature == 0.1
    assert p.train.epochs == 25 and p.train.learning_rate == 1.0e-3
    assert p.knn.k == (20, 200) and p.augment.crop_scale == (0.2, 1.0)
    # The paper's PAWS options and the encoder options they need, all off.
    assert (p.encoder.padding, p.encoder.pooling) == ("valid", "flatten")
    paws = p.methods.paws
    assert (paws.supports_per_class, paws.classes_per_batch, paws.support_views, paws.multicrop) == (
        None,
        None,
        1,
        0,
    )
    assert p.methods == Params().methods and p.encoder == Params().encoder  # params.yaml spells the defaults


def test_round_trip_through_dict(tmp_path):
    p = load_params(committed_params(tmp_path))
    assert parse_params(to_dict(p)) == p


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_mixed_precision_takes_a_bool_or_auto(value):
    assert parse_params({"train": {"mixed_precision": value}}).train.mixed_precision == value


def test_empty_file_gives_defaults(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("")
    assert load_params(f) == Params()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"source": "stl11"}}, "data.source: 'stl11' is not one of stl10, digits, folder"),
        ({"data": {"sorce": "digits"}}, "data.sorce: unknown key (allowed: source, path,"),
        ({"colour": 1}, "colour: unknown key"),
        ({"data": {"num_shards": 0}}, "data.num_shards: 0 is out of range (must be >= 1)"),
        ({"data": {"num_shards": 2.5}}, "data.num_shards: 2.5 is not an integer"),
        ({"data": {"num_shards": True}}, "data.num_shards: True is not an integer"),
        ({"data": {"image_size": 16}}, "data.image_size: 16 is out of range (must be >= 32)"),
        ({"data": {"source": "folder"}}, "data.path: the folder source needs a path"),
        ({"data": {"labeled_per_class": 0}}, "data.labeled_per_class: 0 is out of range"),
        ({"data": {"test_fraction": 1.0}}, "data.test_fraction: 1.0 is out of range (must be < 1.0)"),
        ({"train": {"learning_rate": "1e-3"}}, "write 1.0e-3"),
        (
            {"train": {"mixed_precision": "yes"}},
            "train.mixed_precision: 'yes' is not true or false or one of auto",
        ),
        ({"data": {"path": 3}}, "data.path: 3 is not a string or null"),
        (
            {"train": {"strategy": "tpu"}},
            "train.strategy: 'tpu' is not one of auto, default, mirrored, multiworker",
        ),
        ({"augment": {"crop_scale": [0.9, 0.2]}}, "augment.crop_scale: [0.9, 0.2] must be [low, high]"),
        ({"augment": {"crop_scale": [0.2]}}, "augment.crop_scale: [0.2] is not a list of 2"),
        ({"augment": {"hue": 0.7}}, "augment.hue: 0.7 is out of range (must be <= 0.5)"),
        (
            {"methods": {"paws": {"temperature": 0}}},
            "methods.paws.temperature: 0.0 is out of range (must be > 0.0)",
        ),
        (
            {"methods": {"simclr": {}}},
            "methods.simclr: not a method (crossentropy, infonce, suncet, paws); a configuration names the one "
            "it runs: add method: <one of them>",
        ),
        (
            {"method_names": ["paws", "byol"]},
            "method_names: 'byol' is not a method (crossentropy, infonce, suncet, paws) nor a configuration",
        ),
        (
            {"method_names": ["paws", "suncet", "paws"]},
            "method_names: paws listed twice: list each method once",
        ),
        ({"knn": {"k": []}}, "knn.k: must not be empty"),
        ({"knn": {"k": [20, 0]}}, "knn.k: [20, 0] is out of range (must be >= 1)"),
        ({"data": "digits"}, "data: expected a mapping of keys, got 'digits'"),
        ({"encoder": {"pooling": "max"}}, "encoder.pooling: 'max' is not one of flatten, average"),
        ({"encoder": {"padding": "full"}}, "encoder.padding: 'full' is not one of valid, same"),
        (
            {"methods": {"paws": {"supports_per_class": 0}}},
            "methods.paws.supports_per_class: 0 is out of range",
        ),
        (
            {"methods": {"paws": {"support_views": 0}}},
            "methods.paws.support_views: 0 is out of range (must be >= 1)",
        ),
        (
            {"methods": {"paws": {"multicrop": -1}}},
            "methods.paws.multicrop: -1 is out of range (must be >= 0)",
        ),
        (
            {"methods": {"paws": {"multicrop_scale": [0.3, 0.05]}}},
            "methods.paws.multicrop_scale: [0.3, 0.05] must be [low, high]",
        ),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw, message):
    with pytest.raises(UserError) as info:
        parse_params(raw)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_invalid_yaml_is_a_user_error(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data:\n  source: [digits\n")
    with pytest.raises(UserError, match=r"params.yaml: not valid YAML at line \d+, column \d+"):
        load_params(f)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_frozen():
    p = Params()
    with pytest.raises(AttributeError):
        p.seed = 3  # type: ignore[misc]


def test_stage_reports_one_line_without_traceback(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"data": {"source": "stl11"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.pretrain", "--run", "paws", "--params", str(f)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: data.source: 'stl11' is not one of stl10, digits, folder"
    assert "Traceback" not in proc.stderr


def test_a_folder_path_starting_with_a_tilde_is_expanded():
    params = parse_params({"data": {"source": "folder", "path": "~/images"}})
    assert params.data.path == os.path.expanduser("~/images") and not params.data.path.startswith("~")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "train:\n  epochs: 25\n  learning_rate: 1.0e-3\n  epochs: 5\n",
            "line 4: epochs is set twice in one section (also at line 2); YAML would keep only the last",
        ),
        ("seed: 010\n", "line 1: 010 starts with 0, which YAML reads as octal (8): write it without the 0"),
        ("train:\n  epochs: 0_25\n", "line 2: 0_25 starts with 0, which YAML reads as octal (21)"),
        (
            "augment:\n  crop_ratio: [3:4, 4:3]\n",
            "line 2: 3:4 has a colon, which YAML reads as base 60 (184): quote it or write a number",
        ),
        (
            "train:\n  learning_rate: 1:30.5\n",
            "line 2: 1:30.5 has a colon, which YAML reads as base 60 (90.5)",
        ),
        (
            "train:\n  epochs:\n  learning_rate: 1.0e-3\n",
            "train.epochs: no value (line 2): write one, or delete the key for its default",
        ),
        ("knn:\n  k:\n    - 20\n    -\n", "knn.k[1]: no value (line 4)"),
    ],
)
def test_yaml_that_reads_otherwise_than_meant_names_the_line(tmp_path, text, message):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as info:
        load_params(f)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_what_a_person_means_by_an_empty_value_is_kept(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(
        "seed: 0\ndata:\n  path:\nmethods:\n  paws:\ntrain:\n  epochs: 1_000\n  learning_rate: 0.5\n"
    )
    p = load_params(f)  # an empty section is its defaults, an empty nullable key null; 1_000 is 1000
    assert p.data.path is None and p.methods.paws == Params().methods.paws
    assert p.train.epochs == 1000 and p.seed == 0


# --- named configurations: a section of `methods` that names no method -----------------------------------

CONFIGURED = {
    "train": {"epochs": 7},
    "methods": {
        "paws": {"temperature": 0.2, "unlabeled_batch": 100},
        "paws_ls": {
            "method": "paws",
            "label_smoothing": 0.1,
            "train": {"learning_rate": 0.01},
            "augment": {"crop_scale": [0.5, 1.0]},
        },
    },
    "method_names": ["paws", "paws_ls"],
}


def test_a_configuration_runs_its_method_with_its_own_params_and_overrides():
    params = parse_params(CONFIGURED)
    assert params.method_of("paws_ls") == "paws" and params.method_of("suncet") == "suncet"
    assert params.run_methods() == {m: m for m in ("crossentropy", "infonce", "suncet", "paws")} | {
        "paws_ls": "paws"
    }
    own = params.method("paws_ls")
    # Unset keys take PAWS's dataclass defaults, not methods.paws' values (DVC tracks methods.paws_ls only).
    assert (own.label_smoothing, own.temperature, own.unlabeled_batch) == (0.1, 0.1, 250)
    assert params.method("paws").temperature == 0.2
    run = params.for_run("paws_ls")
    assert run.methods.paws == own and run.method("paws_ls") == own
    assert (run.train.learning_rate, run.train.epochs) == (0.01, 7)  # overridden, and the global epochs
    assert run.augment.crop_scale == (0.5, 1.0) and run.augment.flip is True and run.encoder == params.encoder
    # The global sections and the method's own runs are untouched.
    assert params.train.learning_rate == 1.0e-3 and params.augment.crop_scale == (0.2, 1.0)
    assert params.for_run("paws") is params and run.for_run("paws_ls") == run
    assert parse_params(to_dict(params)) == params


def test_dvc_exp_run_s_sets_a_configurations_key():
    raw = with_overrides(CONFIGURED, {"methods.paws_ls.train.learning_rate": "0.05"})
    raw = with_overrides(raw, {"methods.paws_ls.sharpen_temperature": "0.5"})
    run = parse_params(raw).for_run("paws_ls")
    assert run.train.learning_rate == 0.05 and run.methods.paws.sharpen_temperature == 0.5


@pytest.mark.parametrize(
    "methods, message",
    [
        (
            {"paws_x": {"label_smoothing": 0.1}},
            "methods.paws_x: not a method (crossentropy, infonce, suncet, paws)",
        ),
        (
            {"paws_x": None},
            "methods.paws_x: not a method (crossentropy, infonce, suncet, paws); a configuration",
        ),
        (
            {"paws_x": {"method": "pawz"}},
            "methods.paws_x.method: 'pawz' is not one of crossentropy, infonce,",
        ),
        ({"a": {"method": "paws"}, "b": {"method": "a"}}, "methods.b.method: 'a' is not one of crossentropy"),
        (
            {"paws_x": {"method": "paws", "symmetric": True}},
            "methods.paws_x.symmetric: unknown key (allowed for a ",
        ),
        ({"paws_x": {"method": "paws", "train": {"epoch": 2}}}, "methods.paws_x.train.epoch: unknown key"),
        (
            {"paws_x": {"method": "paws", "train": {"epochs": 0}}},
            "methods.paws_x.train.epochs: 0 is out of range",
        ),
        (
            {"paws_x": {"method": "paws", "temperature": "1e-3"}},
            "methods.paws_x.temperature: '1e-3' is not a number",
        ),
        ({"paws-x": {"method": "paws"}}, "methods.paws-x: not a name for a configuration"),
        ({"paws.x": {"method": "paws"}}, "methods.paws.x: not a name for a configuration"),
        ({"PAWS": {"method": "paws"}}, "methods.PAWS: differs from paws only in case: rename it"),
        (
            {"paws": {"method": "paws"}},
            "methods.paws.method: paws is a method, whose section holds its own params",
        ),
        ({"paws_x": 3}, "methods.paws_x: expected a mapping of keys"),
    ],
)
def test_a_bad_configuration_is_one_line_naming_its_key(methods, message):
    with pytest.raises(UserError) as info:
        parse_params({"methods": methods})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_method_names_takes_methods_and_configurations_and_nothing_else():
    with pytest.raises(UserError, match=r"method_names: 'paws_lz' is not a method .* here: paws_ls\)"):
        parse_params(CONFIGURED | {"method_names": ["paws_lz"]})
    with pytest.raises(UserError, match="method_names: paws_ls listed twice"):
        parse_params(CONFIGURED | {"method_names": ["paws_ls", "paws", "paws_ls"]})
    with pytest.raises(UserError, match=r"^method: 'paws_lz' is not a method"):
        parse_params(CONFIGURED).for_run("paws_lz")


def test_a_stage_refuses_an_unknown_run_before_tensorflow(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(CONFIGURED))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.pretrain", "--run", "paws_lz-5-0", "--params", str(f)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: method: 'paws_lz' is not a method")


# --- PAWS's multi-crop presets: the official settings per image size -------------------------------------
# facebookresearch/suncet src/paws_train.py, main(): CIFAR10 (32-px images) mc_size = 18, mc_scale =
# (0.3, 0.75), crop_scale = (0.75, 1.0) with multicrop; ImageNet (224-px views) mc_size = 96, mc_scale =
# (0.05, 0.14), crop_scale = (0.14, 1.0) with multicrop.


def _crops(image_size: int, **paws) -> tuple:
    from semisup.methods import PAWSParams

    s = PAWSParams(multicrop=6, **paws).multicrop_settings(image_size)
    return s.preset, s.count, s.size, s.scale, s.global_scale


def test_multicrop_settings_at_32_and_96_pixels_are_the_official_ones():
    assert _crops(32) == ("cifar10", 6, 18, (0.3, 0.75), (0.75, 1.0))
    # STL10's 96 px: ImageNet's setting, its 96 of 224 px scaled to the side (41.14 -> 41).
    assert _crops(96) == ("imagenet", 6, 41, (0.05, 0.14), (0.14, 1.0))
    assert _crops(224) == ("imagenet", 6, 96, (0.05, 0.14), (0.14, 1.0))


def test_auto_picks_the_data_set_nearer_in_ratio_and_a_name_picks_the_other():
    from semisup.methods import auto_preset

    # The threshold is the geometric mean of 32 and 224 (84.66): 84 px is nearer CIFAR10 (84/32 = 2.6 <
    # 224/84 = 2.7), 85 px nearer ImageNet.
    assert [auto_preset(side) for side in (32, 64, 84, 85, 96, 224)] == ["cifar10"] * 3 + ["imagenet"] * 3
    assert _crops(32, multicrop_preset="imagenet") == ("imagenet", 6, 14, (0.05, 0.14), (0.14, 1.0))
    assert _crops(96, multicrop_preset="cifar10") == ("cifar10", 6, 54, (0.3, 0.75), (0.75, 1.0))
    # A value given wins over the preset's, one key at a time.
    assert _crops(32, multicrop_size=16, multicrop_scale=(0.1, 0.2)) == (
        "cifar10",
        6,
        16,
        (0.1, 0.2),
        (0.75, 1.0),
    )
    assert _crops(96, multicrop_global_scale=(0.5, 1.0))[4] == (0.5, 1.0)


@pytest.mark.parametrize(
    ("paws", "message"),
    [
        (
            {"multicrop_preset": "stl10"},
            "methods.paws.multicrop_preset: 'stl10' is not one of auto, cifar10, imagenet",
        ),
        (
            {"multicrop_global_scale": [1.0, 0.5]},
            "methods.paws.multicrop_global_scale: [1.0, 0.5] must be [low, high] with low <= high",
        ),
        (
            {"multicrop_scale": [0.0, 0.5]},
            "methods.paws.multicrop_scale: [0.0, 0.5] is out of range (must be > 0.0)",
        ),
        (
            {"multicrop_batchnorm": "shared"},
            "methods.paws.multicrop_batchnorm: 'shared' is not one of per_resolution, joint",
        ),
    ],
)
def test_bad_multicrop_settings_name_the_key(paws, message):
    with pytest.raises(UserError) as info:
        parse_params({"methods": {"paws": paws}})
    assert str(info.value) == message


def test_the_papers_paws_takes_its_crops_from_the_image_size(tmp_path):
    p = load_params(committed_params(tmp_path))
    paper = p.method("paws_paper")
    assert (paper.multicrop, paper.multicrop_preset, paper.multicrop_size, paper.multicrop_scale) == (
        6,
        "auto",
        None,
        None,
    )
    assert paper.multicrop_global_scale is None and paper.multicrop_batchnorm == "per_resolution"
    settings = paper.multicrop_settings(p.data.image_size)  # params.yaml's STL10 at 96 px
    assert (settings.preset, settings.size, settings.scale) == ("imagenet", 41, (0.05, 0.14))


# --- view options and a run resolved once ----------------------------------------------------------------


def test_view_options_are_a_sections_own_or_the_references():
    from semisup.methods import (
        METHODS,
        CrossEntropyParams,
        PAWSParams,
        SuNCEtParams,
        ViewOptions,
        view_options,
    )

    # A section without a key behaves as one at its default: every method's defaults are the reference's.
    for method in METHODS.values():
        assert view_options(method.params()) == ViewOptions(), method.name
    assert view_options(None) == ViewOptions()
    assert view_options(CrossEntropyParams(labeled_batch=3)) == ViewOptions()  # it has none of the keys
    assert view_options(SuNCEtParams(support_views=2)) == ViewOptions(support_views=2)
    paws = PAWSParams(multicrop=6, multicrop_batchnorm="joint", supports_per_class=5, classes_per_batch=2)
    views = view_options(paws)
    assert (
        views.multicrop,
        views.multicrop_batchnorm,
        views.supports_per_class,
        views.classes_per_batch,
    ) == (
        6,
        "joint",
        5,
        2,
    )
    assert views.stratified and not ViewOptions().stratified
    # One resolution of the crops, whichever way it is asked for.
    assert views.crops(32) == views.crop_settings(32) == paws.multicrop_settings(32)
    assert (views.crops(32).size, views.crops(96).size) == (18, 41)  # CIFAR10's 18 px; ImageNet's 96 of 224
    assert ViewOptions().crops(32) is None


def test_a_run_resolves_once_into_one_record(tmp_path):
    import dataclasses

    from semisup.config import resolve_run
    from semisup.methods import METHODS, view_options

    params = load_params(committed_params(tmp_path))
    spec = resolve_run(params, "paws_paper", run="paws_paper-5-2", seed=2, budget=5)
    assert (spec.run, spec.name, spec.method, spec.seed, spec.budget) == (
        "paws_paper-5-2",
        "paws_paper",
        METHODS["paws"],
        2,
        5,
    )
    assert params.seed == 0  # the run's seed is the record's, params.yaml's stays
    # Its params as Params.for_run gives them: the configuration's section stands in its method's too.
    assert spec.params == dataclasses.replace(params.for_run("paws_paper"), seed=2)
    assert spec.method_params == params.configurations["paws_paper"].params == spec.params.methods.paws
    assert spec.params.train.warmup_epochs == 2 and spec.params.encoder.pooling == "average"
    assert spec.views == view_options(spec.method_params)
    assert (spec.views.multicrop, spec.views.support_views, spec.views.supports_per_class) == (6, 2, 25)
    assert spec.labeled_ids is None and spec.on_subset([3, 1]).labeled_ids == (3, 1)
    plain = resolve_run(params, "paws")
    assert (plain.run, plain.seed, plain.params) == ("paws", 0, params)
    with pytest.raises(UserError, match=r"^method: 'pawz' is not a method \(crossentropy, infonce"):
        resolve_run(params, "pawz")


def test_a_fitted_section_replaces_the_runs_params_where_the_trainer_reads_them(tmp_path):
    import dataclasses

    from semisup.config import resolve_run

    spec = resolve_run(load_params(committed_params(tmp_path)), "paws_paper")
    smaller = dataclasses.replace(spec.method_params, supports_per_class=2, labeled_batch=20)
    fitted = spec.with_method_params(smaller, fitted="record")
    assert fitted.method_params == smaller == fitted.params.methods.paws == fitted.params.method("paws_paper")
    assert fitted.views.supports_per_class == 2 and fitted.fitted == "record"
    assert spec.method_params.supports_per_class == 25  # a new record: the first one unchanged
