"""The training options every method gets: the learning-rate schedule, SGD with Nesterov momentum and weight
decay, the projection head; and that with all of them off the reference recipe is untouched."""

from __future__ import annotations

import math
from dataclasses import replace

import keras
import numpy as np
import pytest
import tensorflow as tf

from semisup.config import AugmentParams, EncoderParams, Params, TrainParams, parse_params, resolve_run
from semisup.core.errors import UserError
from semisup.methods import METHODS, Method
from semisup.model import augment as aug
from semisup.model.encoder import ENCODER_LAYERS, check_encoder
from semisup.model.projection import get_projector
from semisup.training import pretrain
from semisup.training.checkpoints import Checkpoints
from semisup.training.optim import learning_rate, make_optimizer
from semisup.training.preflight import projection_weights
from semisup.training.train import Trainer

COSINE = TrainParams(
    epochs=4, learning_rate=0.1, lr_schedule="cosine", warmup_epochs=1, final_learning_rate=0.01
)
STEPS = 5  # per epoch: 20 steps, 5 of warmup, the cosine over steps 5 .. 19


def _cosine_by_hand(step: int, steps: int = STEPS) -> float:
    """COSINE's rate at `step` with `steps` per epoch: warmup over epoch 1, cosine to the last step."""
    warmup, decay = steps, 4 * steps - steps - 1
    if step < warmup:
        return 0.1 * step / warmup
    return 0.01 + (0.1 - 0.01) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay))


# --- the schedule ---------------------------------------------------------------------------------------


def test_cosine_schedule_at_chosen_steps():
    rate = learning_rate(COSINE, STEPS)
    values = {s: float(rate(s)) for s in (0, 2, 5, 12, 19, 25)}
    # Warmup from 0; its end is the peak; mid-cosine is halfway between peak and final; the last step is final.
    expected = {0: 0.0, 2: 0.04, 5: 0.1, 12: 0.055, 19: 0.01, 25: 0.01}
    for step, value in expected.items():
        assert values[step] == pytest.approx(value, rel=1e-6, abs=1e-9), step
        assert values[step] == pytest.approx(_cosine_by_hand(min(step, 19)), rel=1e-6, abs=1e-9)


def test_warmup_then_constant():
    rate = learning_rate(replace(COSINE, lr_schedule="constant"), STEPS)
    assert [float(rate(s)) for s in (0, 1, 4)] == pytest.approx([0.0, 0.02, 0.08])
    assert {float(rate(s)) for s in (5, 12, 19)} == {np.float32(0.1)}


def test_cosine_without_warmup_starts_at_the_peak():
    rate = learning_rate(replace(COSINE, warmup_epochs=0), STEPS)
    assert float(rate(0)) == pytest.approx(0.1)
    assert float(rate(19)) == pytest.approx(0.01)
    assert float(rate(19 / 2)) == pytest.approx(0.055)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train.warmup_epochs": 4}, r"train\.warmup_epochs: 4 leaves no epoch after the warmup"),
        (
            {"train.final_learning_rate": 0.5},
            r"train\.final_learning_rate: 0\.5 is above train\.learning_rate",
        ),
        ({"train.optimizer": "lars"}, r"train\.optimizer: 'lars' is not one of adam, sgd"),
        ({"train.momentum": 1.0}, r"train\.momentum: 1\.0 is out of range"),
        ({"encoder.projection_layers": -1}, r"encoder\.projection_layers: -1 is out of range"),
        ({"methods": {"suncet": {"supervised_epochs": -1}}}, r"methods\.suncet\.supervised_epochs: -1"),
    ],
)
def test_impossible_settings_fail_validation(changes, message):
    raw: dict = {"train": {"epochs": 4}}
    for key, value in changes.items():
        if "." in key:
            section, leaf = key.split(".")
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[key] = value
    with pytest.raises(UserError, match=message):
        parse_params(raw)


# --- the optimizer --------------------------------------------------------------------------------------


def _dense(seed: int = 0) -> tuple[keras.Model, tf.Tensor]:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x = tf.constant(np.random.default_rng(seed).normal(size=(4, 3)), tf.float32)
    return model, x


def _grads(model: keras.Model, x: tf.Tensor) -> list[np.ndarray]:
    with tf.GradientTape() as tape:
        loss = 0.5 * tf.reduce_sum(model(x) ** 2)
    return tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgd_nesterov_and_weight_decay_match_the_papers_update(weight_decay):
    """Three steps of train.optimizer: sgd against torch.optim.SGD(nesterov=True)'s formula in numpy:
    buf = mu buf + g; w -= lr (g + mu buf); with decoupled weight decay w *= 1 - lr wd first, on the kernel
    only (the bias never decays)."""
    train = TrainParams(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=weight_decay)
    model, x = _dense()
    optimizer = make_optimizer(train, 10, model.trainable_variables)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    weights = [np.asarray(v, np.float64) for v in model.trainable_variables]
    bufs = [np.zeros_like(w) for w in weights]
    for _ in range(3):
        grads = _grads(model, x)
        optimizer.apply(grads, model.trainable_variables)
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            if weights[i].ndim > 1:
                weights[i] = weights[i] * (1 - 0.1 * weight_decay)
            bufs[i] = 0.9 * bufs[i] + g
            weights[i] = weights[i] - 0.1 * (g + 0.9 * bufs[i])
        for w, v in zip(weights, model.trainable_variables, strict=True):
            np.testing.assert_allclose(np.asarray(v), w, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights[0], np.asarray(_dense()[0].trainable_variables[0]))


def test_options_off_is_the_reference_adam():
    model, _ = _dense()
    optimizer = make_optimizer(TrainParams(), 10, model.trainable_variables)
    assert type(optimizer) is keras.optimizers.Adam
    assert learning_rate(TrainParams(), 10) == 1.0e-3  # a float, not a schedule
    unnamed = lambda opt: {k: v for k, v in opt.get_config().items() if k != "name"}  # noqa: E731  (adam_1...)
    assert unnamed(optimizer) == unnamed(keras.optimizers.Adam(learning_rate=1.0e-3))
    assert optimizer.weight_decay is None


def _run(method: str, encoder: EncoderParams, tmp_path, params: Params | None = None) -> pretrain.Run:
    params = params or replace(Params(), encoder=encoder)
    return pretrain.Run(
        resolve_run(params, method),
        tmp_path,
        4,
        (32, 32, 3),
        tf.distribute.get_strategy(),
        False,
        0,
        1,
    )


def test_options_off_build_the_reference_models(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain.readers, "steps_per_epoch", lambda *a, **k: 10)
    small = EncoderParams(filters=8, embedding_dim=16)
    for method, names in (("infonce", ["encoder"]), ("crossentropy", ["encoder", "head"])):
        models, trainer = pretrain.build(_run(method, small, tmp_path))
        assert list(models) == names and trainer.projector is None
        assert trainer.per_example == METHODS[method].per_example
        kinds = [type(layer).__name__ for layer in models["encoder"].layers]
        assert kinds == ["InputLayer", "Conv2D", "Conv2D", "Conv2D", "Conv2D", "Flatten", "Dense"]
        assert trainer.variables == [v for m in models.values() for v in m.trainable_variables]
    assert ENCODER_LAYERS == ("InputLayer", "Conv2D", "Flatten", "Dense")


# --- the projection head --------------------------------------------------------------------------------


def test_projector_forms():
    assert get_projector(16, layers=0, hidden=8, output_dim=4) is None
    kinds = [type(layer).__name__ for layer in get_projector(16, layers=3, hidden=8, output_dim=4).layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU", "Dense", "BatchNormalization", "ReLU", "Dense"]
    assert [type(layer).__name__ for layer in get_projector(16, layers=1, hidden=8, output_dim=4).layers] == [
        "Dense"
    ]


def test_projection_weights_match_keras():
    for layers in (0, 1, 2, 3):
        enc = EncoderParams(
            embedding_dim=16, projection_layers=layers, projection_hidden=12, projection_dim=6
        )
        head = get_projector(16, layers=layers, hidden=12, output_dim=6)
        assert projection_weights(enc) == (head.count_params() if head is not None else 0)


def test_the_loss_sees_the_projection_and_the_encoder_stays_the_representation(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain.readers, "steps_per_epoch", lambda *a, **k: 10)
    head = EncoderParams(
        filters=8, embedding_dim=16, projection_layers=2, projection_hidden=12, projection_dim=6
    )
    models, _ = pretrain.build(_run("crossentropy", head, tmp_path))
    assert list(models) == ["encoder", "projector", "head"]
    assert models["head"].layers[-1].kernel.shape == (6, 4)  # CrossEntropy classifies the projection
    # The representation (monitor, embed, saved model) is the encoder alone: this pipeline's architecture.
    check_encoder(models["encoder"], "encoder", image_shape=(32, 32, 3), rerun="rerun")
    assert models["encoder"].outputs[0].shape[-1] == 16

    seen = {}

    def compute(inputs, params):
        seen["widths"] = [int(v.shape[-1]) for v in inputs.views]
        return tf.reduce_mean(inputs.views[0] * inputs.views[1]), {}

    method = Method("probe", unlabeled_views=2, uses_labeled=False, has_head=False, compute=compute)
    encoder, projector = models["encoder"], models["projector"]
    trainer = Trainer(
        method,
        None,
        encoder=encoder,
        head=None,
        optimizer=keras.optimizers.SGD(),
        augment_kwargs=aug.from_params(AugmentParams()),
        num_classes=4,
        seed=0,
        projector=projector,
    )
    rng = np.random.default_rng(0)
    v1, v2 = (tf.constant(rng.uniform(size=(5, 32, 32, 3)), tf.float32) for _ in range(2))
    loss, _, grads = trainer.loss_and_grads((v1, v2), None, None)
    assert seen["widths"] == [6, 6]
    # By hand: the projector over both views' embeddings at once (BatchNorm over the whole batch).
    z = projector(tf.concat([encoder(v1, training=True), encoder(v2, training=True)], 0), training=True)
    np.testing.assert_allclose(float(loss), float(tf.reduce_mean(z[:5] * z[5:])), rtol=1e-5)
    assert len(grads) == len(encoder.trainable_variables) + len(projector.trainable_variables)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def _batches(n: int, size: int = 8) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    u = rng.integers(0, 256, (n * size, 32, 32, 3), dtype=np.uint8)
    labeled = rng.integers(0, 256, (n * size, 32, 32, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices((u, labeled, np.arange(n * size) % 4)).batch(size)


def test_a_resumed_run_continues_the_schedule_and_the_head(tmp_path, monkeypatch):
    """Epoch 2 after restoring the checkpoint of epoch 1 is epoch 2 of the uninterrupted run, bit for bit:
    the step counter (the schedule's position), the head's weights and its BatchNorm statistics come back.
    (The same trainer restores it, after running on: one trace instead of two; everything it restores
    has moved on since, so nothing passes by staying put.)"""
    steps = 2
    monkeypatch.setattr(pretrain.readers, "steps_per_epoch", lambda *a, **k: steps)
    head = EncoderParams(
        filters=4, embedding_dim=8, projection_layers=2, projection_hidden=12, projection_dim=6
    )
    params = replace(Params(), encoder=head, train=replace(COSINE, optimizer="sgd", weight_decay=0.01))
    keras.utils.set_random_seed(0)
    models, trainer = pretrain.build(_run("infonce", head, tmp_path, params))
    assert list(models) == ["encoder", "projector"]
    snapshot = lambda: [np.array(w) for m in models.values() for w in m.weights]  # noqa: E731

    data = _batches(steps, size=4)
    trainer.train_epoch(data, 1, steps)
    ckpt = Checkpoints(tmp_path, "run")
    ckpt.save(1, [{"epoch": 1}], models, trainer.optimizer)
    after_one = snapshot()
    straight = trainer.train_epoch(data, 2, steps)
    after_two = snapshot()
    assert int(trainer.optimizer.iterations) == 2 * steps

    assert ckpt.load(models, trainer.optimizer, trainer.variables) is not None
    assert int(trainer.optimizer.iterations) == steps
    assert float(trainer.optimizer.learning_rate) == pytest.approx(_cosine_by_hand(steps, steps), rel=1e-6)
    for a, b in zip(after_one, snapshot(), strict=True):
        np.testing.assert_array_equal(a, b)  # BatchNorm's moving statistics among them
    assert trainer.train_epoch(data, 2, steps) == straight
    assert float(trainer.optimizer.learning_rate) == pytest.approx(
        _cosine_by_hand(2 * steps, steps), rel=1e-6
    )
    for a, b in zip(after_two, snapshot(), strict=True):
        np.testing.assert_array_equal(a, b)
    moving = models["projector"].get_layer("proj_bn1").moving_mean
    assert not np.allclose(np.asarray(moving), 0.0)  # trained statistics, not the initial zeros


# --- the head with multi-crop: BatchNorm per resolution group, as the paper runs it ----------------------


def _head_by_hand(projector: keras.Model, groups: list[np.ndarray]) -> list[np.ndarray]:
    """The projection head in float64 over each group of rows on its own: Dense, BatchNorm with the
    group's mean and biased variance (Keras's epsilon), ReLU, ..., Dense. (N_g, D) each -> (N_g, P) each."""
    out = []
    for h in groups:
        for layer in projector.layers:
            if isinstance(layer, keras.layers.Dense):
                h = h @ np.asarray(layer.kernel, np.float64) + np.asarray(layer.bias, np.float64)
            elif isinstance(layer, keras.layers.BatchNormalization):
                gamma, beta = np.asarray(layer.gamma, np.float64), np.asarray(layer.beta, np.float64)
                h = gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + layer.epsilon) + beta
            else:
                h = np.maximum(h, 0.0)
        out.append(h)
    return out


def test_the_head_normalises_the_small_crops_apart_as_the_official_forward_pass():
    """PAWS with two small crops and a 2-layer head (BatchNorm) against the official loss on the head's
    output computed by hand: per_resolution (the default, the paper's: views with the supports, then the
    crops) and joint (every row at once). The crops are brighter than the views, so the groupings'
    statistics, and losses, differ."""
    from semisup.methods import PAWSParams
    from semisup.model.encoder import get_encoder
    from tests.test_methods import ref_paws_official

    keras.utils.set_random_seed(0)
    encoder = get_encoder((32, 32, 3), filters=8, embedding_dim=16, padding="same", pooling="average")
    projector = get_projector(16, layers=2, hidden=12, output_dim=8)
    rng = np.random.default_rng(5)
    image = lambda n, side, low, high: tf.constant(rng.uniform(low, high, (n, side, side, 3)), tf.float32)  # noqa: E731
    views = (image(6, 32, 0.0, 0.5), image(6, 32, 0.0, 0.5))
    labeled, labels = image(4, 32, 0.0, 0.5), np.array([0, 1, 2, 3])
    crops = (image(6, 12, 0.5, 1.0), image(6, 12, 0.5, 1.0))
    h = lambda x: encoder(x, training=True).numpy().astype(np.float64)  # noqa: E731
    large, small = [h(x) for x in (*views, labeled)], [h(c) for c in crops]

    def official(groups: list[list[np.ndarray]]) -> float:
        sizes = [len(x) for group in groups for x in group]
        z = np.split(
            np.concatenate(_head_by_hand(projector, [np.concatenate(g) for g in groups])),
            np.cumsum(sizes)[:-1],
        )
        return ref_paws_official(z[:2], z[3:], z[2], labels, 4, 0.1, 0.25, True, 0.0)

    expected = {"per_resolution": official([large, small]), "joint": official([large + small])}
    assert abs(expected["per_resolution"] - expected["joint"]) > 1e-2
    assert PAWSParams().multicrop_batchnorm == "per_resolution"
    for grouping, value in expected.items():
        params = PAWSParams(multicrop=2, multicrop_size=12, multicrop_batchnorm=grouping)
        trainer = Trainer(
            METHODS["paws"],
            params,
            encoder=encoder,
            head=None,
            optimizer=keras.optimizers.Adam(),
            augment_kwargs=aug.from_params(AugmentParams()),
            num_classes=4,
            seed=0,
            projector=projector,
        )
        loss, _, grads = trainer.loss_and_grads(views, (labeled,), tf.constant(labels), crops)
        np.testing.assert_allclose(float(loss), value, rtol=1e-5, atol=1e-6, err_msg=grouping)
        assert all(np.isfinite(g.numpy()).all() for g in grads)


def test_a_run_with_crops_logs_the_settings_it_resolved(caplog):
    from semisup.methods import PAWSParams, view_options

    with caplog.at_level("INFO", logger=pretrain.log.name):
        pretrain._log_crops("paws", view_options(PAWSParams()), 96)  # no crops: nothing to say
        pretrain._log_crops("paws_paper", view_options(PAWSParams(multicrop=6)), 96)
    assert [r.getMessage() for r in caplog.records] == [
        "paws_paper: multi-crop with the imagenet preset at 96 px: 6 crops of 41 px at area [0.05, 0.14], "
        "the views at [0.14, 1.0], the head's BatchNorm per_resolution"
    ]
