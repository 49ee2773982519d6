"""The convnet encoder and head: shapes, parameter counts by hand, size checks, save/load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from semisup.core.errors import UserError
from semisup.model.encoder import get_encoder, get_head, min_image_size


def _conv_params(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def test_reference_encoder_shapes_and_parameter_count():
    enc = get_encoder((96, 96, 3))
    # Valid 3x3 stride-2 convs: 96 -> 47 -> 23 -> 11 -> 5, so Flatten gives 5 * 5 * 128 = 3200.
    assert [layer.output.shape[1] for layer in enc.layers if "conv" in layer.name] == [47, 23, 11, 5]
    expected = _conv_params(3, 3, 128) + 3 * _conv_params(3, 128, 128) + (3200 * 128 + 128)
    assert expected == 856_064
    assert enc.count_params() == expected
    out = enc(np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32))
    assert out.shape == (2, 128) and out.dtype == "float32"


def test_small_config_matches_a_hand_count_and_a_numpy_forward_pass():
    enc = get_encoder((15, 15, 3), filters=4, depth=2, kernel_size=3, stride=2, embedding_dim=5)
    # conv1: 3*3*3*4 + 4 = 112, 15 -> 7; conv2: 3*3*4*4 + 4 = 148, 7 -> 3; dense: 3*3*4*5 + 5 = 185.
    assert enc.count_params() == 112 + 148 + 185
    x = np.random.default_rng(1).random((2, 15, 15, 3), dtype=np.float32)
    h = x
    for name in ("conv1", "conv2"):
        kernel, bias = (w.numpy() for w in enc.get_layer(name).weights)
        n = (h.shape[1] - 3) // 2 + 1
        patches = np.array([[h[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] for j in range(n)] for i in range(n)])
        patches = patches.transpose(2, 0, 1, 3, 4, 5)  # (B, n, n, 3, 3, C)
        h = np.maximum(np.einsum("bijuvc,uvcf->bijf", patches, kernel) + bias, 0)
    kernel, bias = (w.numpy() for w in enc.get_layer("embedding").weights)
    expected = h.reshape(2, -1) @ kernel + bias
    np.testing.assert_allclose(enc(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_min_image_size_inverts_the_valid_conv_arithmetic():
    assert min_image_size(4, 3, 2) == 31
    assert min_image_size(1, 5, 3) == 5
    assert min_image_size(3, 3, 1) == 7
    enc = get_encoder((31, 31, 3))
    assert enc.output.shape == (None, 128) and enc.get_layer("conv4").output.shape[1:3] == (1, 1)


def test_too_small_image_is_a_user_error_naming_image_size_and_minimum():
    with pytest.raises(UserError, match=r"data\.image_size: 30 .*at least 31"):
        get_encoder((30, 30, 3))
    with pytest.raises(UserError, match=r"at least 15"):
        get_encoder((32, 14, 3), depth=3)


def test_head_is_relu_then_dense():
    head = get_head(10)
    z = np.random.default_rng(2).normal(size=(3, 8)).astype(np.float32)
    logits = head(z).numpy()
    kernel, bias = (w.numpy() for w in head.get_layer("logits").weights)
    np.testing.assert_allclose(logits, np.maximum(z, 0) @ kernel + bias, rtol=1e-5, atol=1e-6)
    assert logits.shape == (3, 10)
    with pytest.raises(UserError, match="at least 2"):
        get_head(1)


def test_save_and_load_in_safe_mode_gives_identical_outputs(tmp_path):
    enc = get_encoder((32, 32, 3), filters=8, embedding_dim=16)
    head = get_head(4)
    head(enc.output)  # build the head on the embedding
    x = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    for model in (enc, head):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        inputs = x if model is enc else enc(x).numpy()
        np.testing.assert_array_equal(loaded(inputs).numpy(), model(inputs).numpy())
        assert loaded.name == model.name


def test_head_with_input_dim_is_built_at_once():
    head = get_head(3, input_dim=5)
    assert [tuple(w.shape) for w in head.weights] == [(5, 3), (3,)]
    assert get_head(3).weights == []  # built lazily on first call otherwise


# Builds a seeded encoder in float32 and in mixed_bfloat16, saves each with save_encoder and records its
# embedding of a fixed input: run in a fresh process, so that nothing but the model decides the bytes.
_SAVE_IN_A_PROCESS = """
import sys
from pathlib import Path

import keras
import numpy as np

from semisup.model.encoder import get_encoder, save_encoder
from semisup.training.precision import set_precision

out = Path(sys.argv[1])
x = np.random.default_rng(5).random((3, 32, 32, 3), dtype=np.float32)
for mixed in (False, True):
    set_precision(mixed)
    keras.utils.set_random_seed(0)
    enc = get_encoder((32, 32, 3), filters=8, embedding_dim=16)
    save_encoder(enc, out / f"mixed-{mixed}" / "encoder.keras")
    np.save(out / f"mixed-{mixed}" / "outputs.npy", np.asarray(enc(x), np.float32))
"""


def test_encoders_built_in_two_processes_save_to_the_same_bytes(tmp_path):
    import subprocess
    import sys

    from tests.support import ENV, ROOT

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SAVE_IN_A_PROCESS, str(tmp_path / run)],
            cwd=ROOT,  # this checkout's semisup, whatever the venv's editable install points at
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    x = np.random.default_rng(5).random((3, 32, 32, 3), dtype=np.float32)
    for mixed in (False, True):
        a, b = (tmp_path / run / f"mixed-{mixed}" for run in ("a", "b"))
        assert (a / "encoder.keras").read_bytes() == (b / "encoder.keras").read_bytes(), f"mixed={mixed}"
        loaded = keras.models.load_model(a / "encoder.keras", compile=False, safe_mode=True)
        want = "mixed_bfloat16" if mixed else "float32"
        assert {layer.dtype_policy.name for layer in loaded.layers[1:]} == {want}
        np.testing.assert_array_equal(np.asarray(loaded(x), np.float32), np.load(a / "outputs.npy"))


def test_encoder_layers_follow_the_global_policy_each_with_its_own_policy_object():
    from semisup.training.precision import set_precision

    try:
        set_precision(True)
        enc = get_encoder((32, 32, 3), filters=8, embedding_dim=16)
    finally:
        set_precision(False)
    layers = enc.layers[1:]
    assert {(lay.dtype_policy.compute_dtype, lay.dtype_policy.variable_dtype) for lay in layers} == {
        ("bfloat16", "float32")
    }
    assert len({id(lay.dtype_policy) for lay in layers}) == len(layers)
    assert get_encoder((32, 32, 3), filters=8).get_layer("conv1").dtype_policy.name == "float32"


def test_shared_objects_are_numbered_by_first_appearance_not_by_memory_address(tmp_path):
    import json
    import zipfile

    from semisup.model.encoder import renumber_shared_objects, save_encoder

    # Layers left to the default policy all hold the one global policy object: Keras writes it as shared.
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    save_encoder(model, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        config = z.read("config.json").decode()
    assert '"shared_object_id": 1' in config and '"shared_object_id": 2' not in config
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    x = np.random.default_rng(4).random((2, 6), dtype=np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())

    def doc(ids):
        return json.dumps({"a": [{"shared_object_id": i} for i in ids], "b": {"shared_object_id": ids[0]}})

    assert renumber_shared_objects(doc([140001, 139999, 140001]).encode()) == doc([1, 2, 1]).encode()
    assert renumber_shared_objects(b'{"a": 1}') == b'{"a": 1}'


# --- the options multi-crop needs: padding and global average pooling ------------------------------------


def test_the_default_encoder_is_the_reference_layer_by_layer():
    enc = get_encoder((32, 32, 3), filters=8, embedding_dim=16)
    kinds = [type(layer).__name__ for layer in enc.layers]
    assert kinds == ["InputLayer", "Conv2D", "Conv2D", "Conv2D", "Conv2D", "Flatten", "Dense"]
    assert all(enc.get_layer(f"conv{i}").padding == "valid" for i in range(1, 5))
    assert tuple(enc.inputs[0].shape) == (None, 32, 32, 3)
    explicit = get_encoder((32, 32, 3), filters=8, embedding_dim=16, padding="valid", pooling="flatten")
    assert explicit.get_config() == enc.get_config()


def test_same_padding_and_average_pooling_shapes_and_hand_count():
    enc = get_encoder((20, 20, 3), filters=4, depth=2, embedding_dim=5, padding="same", pooling="average")
    # Same padding, stride 2: 20 -> 10 -> 5; the pooling averages the 5 x 5 x 4 map into 4 features.
    assert [enc.get_layer(n).output.shape[1:] for n in ("conv1", "conv2")] == [(None, None, 4)] * 2
    assert enc.count_params() == _conv_params(3, 3, 4) + _conv_params(3, 4, 4) + (4 * 5 + 5)
    x = np.random.default_rng(4).random((2, 20, 20, 3), dtype=np.float32)
    h = enc.get_layer("conv2")(enc.get_layer("conv1")(x)).numpy()
    assert h.shape == (2, 5, 5, 4)
    kernel, bias = (w.numpy() for w in enc.get_layer("embedding").weights)
    np.testing.assert_allclose(enc(x).numpy(), h.mean(axis=(1, 2)) @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_one_pooled_encoder_takes_several_image_sizes_and_loads_from_its_file(tmp_path):
    from semisup.model.encoder import check_encoder, load_encoder, save_encoder

    enc = get_encoder((32, 32, 3), filters=8, embedding_dim=16, padding="same", pooling="average")
    rng = np.random.default_rng(5)
    large, small = rng.random((3, 32, 32, 3), dtype=np.float32), rng.random((3, 14, 14, 3), dtype=np.float32)
    assert enc(large).shape == enc(small).shape == (3, 16)
    save_encoder(enc, tmp_path / "encoder.keras")
    loaded = load_encoder(tmp_path / "encoder.keras", image_shape=(32, 32, 3), rerun="rerun")
    for x in (large, small):
        np.testing.assert_array_equal(loaded(x).numpy(), enc(x).numpy())
    # A Flatten encoder still must match the shards' image shape.
    from semisup.core.errors import DataError

    with pytest.raises(
        DataError, match=r"takes images of shape \(32, 32, 3\), the shards hold \(40, 40, 3\)"
    ):
        check_encoder(get_encoder((32, 32, 3), filters=8), "x.keras", image_shape=(40, 40, 3), rerun="rerun")
    with pytest.raises(
        DataError, match=r"takes images of shape \(None, None, 3\), the shards hold \(32, 32, 1\)"
    ):
        check_encoder(enc, "x.keras", image_shape=(32, 32, 1), rerun="rerun")


def test_same_padding_lets_any_side_survive_and_preflight_counts_the_weights():
    from semisup.config import EncoderParams
    from semisup.training.preflight import conv_side, encoder_weights

    assert min_image_size(4, 3, 2, "same") == 1
    enc = get_encoder((7, 7, 3), filters=4, padding="same", pooling="flatten")  # 7 -> 4 -> 2 -> 1 -> 1
    assert enc.get_layer("conv4").output.shape[1:3] == (1, 1)
    assert conv_side(7, EncoderParams(padding="same")) == 1 and conv_side(30, EncoderParams()) == 0
    for padding in ("valid", "same"):
        for pooling in ("flatten", "average"):
            params = EncoderParams(filters=4, embedding_dim=6, padding=padding, pooling=pooling)
            model = get_encoder((40, 40, 3), filters=4, embedding_dim=6, padding=padding, pooling=pooling)
            assert encoder_weights((40, 40, 3), params) == model.count_params(), (padding, pooling)
