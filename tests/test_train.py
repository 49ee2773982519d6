"""The training loop: global-batch losses under MirroredStrategy, divergence, checkpoints, fingerprints."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from semisup.config import AugmentParams, Params
from semisup.methods import METHODS, Method, PAWSParams
from semisup.model import augment as aug
from semisup.model.embed import embed
from semisup.model.encoder import get_encoder, get_head
from semisup.training.checkpoints import Checkpoints, fingerprint
from semisup.training.train import Trainer, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter (logical devices must be configured before TensorFlow initialises), one for
# every configuration of argv[1:]: one JSON line each, in order. One interpreter, not one per
# configuration: each would spend its first ~6 s of CPU importing TensorFlow.
MIRRORED = textwrap.dedent(
    """
    import dataclasses, json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from semisup.model import augment as aug
    from semisup.config import AugmentParams, Params
    from semisup.model.encoder import get_encoder, get_head
    from semisup.methods import METHODS
    from semisup.model.projection import get_projector
    from semisup.training.train import Trainer

    # One strategy for every check: a second one in the same process reuses its collectives' instance keys.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def check(name, projected, cropped):
        method = METHODS[name]
        params = Params().method(name)
        if cropped:  # two 12-pixel crops on a pooled encoder: the head's BatchNorm per resolution group
            params = dataclasses.replace(params, multicrop=2, multicrop_size=12)
        pooled = {"padding": "same", "pooling": "average"} if cropped else {}

        def build(strategy):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                encoder = get_encoder((32, 32, 3), filters=8, embedding_dim=16, **pooled)
                projector = get_projector(16, layers=3, hidden=12, output_dim=8) if projected else None
                head = get_head(4, input_dim=8 if projected else 16) if method.has_head else None
                optimizer = keras.optimizers.Adam()
            return Trainer(method, params, encoder=encoder, head=head, optimizer=optimizer,
                           augment_kwargs=aug.from_params(AugmentParams()), num_classes=4, seed=0, strategy=strategy,
                           projector=projector)

        rng = np.random.default_rng(1)
        views = tuple(tf.constant(rng.uniform(size=(8, 32, 32, 3)), tf.float32) for _ in range(method.unlabeled_views))
        labeled = tf.constant(rng.uniform(size=(8, 32, 32, 3)), tf.float32) if method.uses_labeled else None
        labels = tf.constant(np.arange(8) % 4, tf.int64) if method.uses_labeled else None
        crops = tuple(tf.constant(rng.uniform(0.5, 1.0, (8, 12, 12, 3)), tf.float32) for _ in range(2 * cropped))

        one = build(tf.distribute.get_strategy())
        loss1, _, grads1 = one.loss_and_grads(views, labeled, labels, crops)

        two = build(strategy)
        for a, b in zip(one.variables, two.variables):
            b.assign(a)

        def shard(t):
            if t is None:
                return None
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: t[4 * ctx.replica_id_in_sync_group: 4 * (ctx.replica_id_in_sync_group + 1)])

        @tf.function
        def step(views, labeled, labels, crops):
            loss, _, grads = strategy.run(two.loss_and_grads, args=(views, labeled, labels, crops))
            summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
            return strategy.experimental_local_results(loss), summed

        losses2, grads2 = step(
            tuple(shard(v) for v in views), shard(labeled), shard(labels), tuple(shard(c) for c in crops))
        print(json.dumps({
            "replicas": strategy.num_replicas_in_sync,
            "loss1": float(loss1),
            "losses2": [float(x) for x in losses2],
            "max_grad_diff": max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads1, grads2)),
            "max_grad": max(float(tf.reduce_max(tf.abs(a))) for a in grads1),
        }))

    for arg in sys.argv[1:]:
        check(arg.split("+")[0], arg.endswith("+projection"), "+crops" in arg)
    """
)


# "+projection": with a projection head, whose BatchNorm must see the global batch on any replica count
# (CrossEntropy, a per-example method, then gathers too; SuNCEt projects views and labeled rows together);
# "+crops": PAWS with two small crops, which the head normalises apart from the views and supports.
MIRRORED_NAMES = [*sorted(METHODS), "crossentropy+projection", "suncet+projection", "paws+crops+projection"]


@pytest.fixture(scope="module")
def mirrored() -> dict[str, dict]:
    """MIRRORED's result for every name of MIRRORED_NAMES, from one interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, *MIRRORED_NAMES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(MIRRORED_NAMES), proc.stdout[-3000:]
    return dict(zip(MIRRORED_NAMES, map(json.loads, lines), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", MIRRORED_NAMES)
def test_mirrored_two_replicas_match_one_device(mirrored, name):
    out = mirrored[name]
    assert out["replicas"] == 2
    # Each replica computes the loss of the whole (gathered) batch.
    np.testing.assert_allclose(out["losses2"], [out["loss1"]] * 2, rtol=1e-5, atol=1e-6)
    assert out["max_grad"] > 0
    assert out["max_grad_diff"] <= 1e-5 * max(1.0, out["max_grad"]), out


def _trainer(method: Method, **kwargs) -> Trainer:
    keras.utils.set_random_seed(0)
    encoder = get_encoder((32, 32, 3), filters=8, embedding_dim=16)
    head = get_head(4, input_dim=16) if method.has_head else None
    params = kwargs.pop("params", Params().method(method.name) if method.name in METHODS else None)
    return Trainer(
        method,
        params,
        encoder=encoder,
        head=head,
        optimizer=keras.optimizers.Adam(),
        augment_kwargs=aug.from_params(AugmentParams()),
        num_classes=4,
        seed=0,
        **kwargs,
    )


def _batches(n: int, size: int = 8) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    u = rng.integers(0, 256, (n * size, 32, 32, 3), dtype=np.uint8)
    labeled = rng.integers(0, 256, (n * size, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n * size) % 4
    return tf.data.Dataset.from_tensor_slices((u, labeled, labels)).batch(size)


def test_nan_loss_stops_with_epoch_and_step():
    counter = tf.Variable(0, dtype=tf.int64)

    def compute(inputs, params):
        # Finite on the first step, NaN from the second on: the error must name step 2.
        counter.assign_add(1)
        zero = tf.reduce_mean(inputs.views[0]) * 0.0
        return zero + tf.where(counter > 1, tf.constant(np.nan, tf.float32), 0.0), {}

    method = Method("nanny", unlabeled_views=2, uses_labeled=False, has_head=False, compute=compute)
    trainer = _trainer(method, params=None)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 3, step 2"):
        trainer.train_epoch(_batches(4), epoch=3, steps_per_epoch=4)


def _spy_on_encoder(trainer) -> list[int]:
    """Make `trainer` run eagerly and record the batch size of every encoder call; -> that record."""
    seen: list[int] = []
    encode = trainer._encode_fn

    def spy(images):
        seen.append(int(images.shape[0]))
        return encode(images)

    trainer._encode = spy
    trainer._step = trainer._distributed_step  # eager, so the spy sees every call
    return seen


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_encodes_only_what_it_declares(name, monkeypatch):
    method = METHODS[name]
    trainer = _trainer(method)
    seen = _spy_on_encoder(trainer)
    logs = trainer.train_epoch(_batches(1), epoch=1, steps_per_epoch=1)
    assert np.isfinite(logs["loss"])
    expected = 8 * method.unlabeled_views + (8 if method.uses_labeled else 0)
    assert seen == [expected]


def test_suncet_encodes_no_labeled_batch_after_its_supervised_epochs(monkeypatch):
    params = replace(Params().method("suncet"), supervised_epochs=1)
    trainer = _trainer(METHODS["suncet"], params=params)
    seen = _spy_on_encoder(trainer)
    first = trainer.train_epoch(_batches(1), epoch=1, steps_per_epoch=1)
    second = trainer.train_epoch(_batches(1), epoch=2, steps_per_epoch=1)
    assert seen == [2 * 8 + 8, 2 * 8]
    assert first["supervised_loss"] > 0 and first["loss"] > first["contrastive_loss"]
    assert second["supervised_loss"] == 0.0 and second["loss"] == second["contrastive_loss"]


def test_same_seed_repeats_and_steps_differ():
    def run():
        trainer = _trainer(METHODS["suncet"])
        data = _batches(2)
        return [trainer.train_epoch(data, epoch=e, steps_per_epoch=2)["loss"] for e in (1, 2, 3)]

    first, second = run(), run()
    assert first == second  # bit for bit: stateless augmentation seeded by (seed, step)
    assert len(set(first)) == 3 and all(np.isfinite(first))


def test_checkpoint_round_trip(tmp_path):
    trainer = _trainer(METHODS["crossentropy"])
    trainer.train_epoch(_batches(1), epoch=1, steps_per_epoch=1)
    models = {"encoder": trainer.encoder, "head": trainer.head}
    ckpt = Checkpoints(tmp_path, "key")
    ckpt.save(1, [{"epoch": 1, "loss": 1.5}], models, trainer.optimizer)
    ckpt.save(2, [{"epoch": 1, "loss": 1.5}, {"epoch": 2, "loss": 1.2}], models, trainer.optimizer)
    assert sorted(p.name for p in ckpt.dir.iterdir()) == ["state.json", "weights-00002.npz"]

    other = _trainer(METHODS["crossentropy"])
    other_models = {"encoder": other.encoder, "head": other.head}
    for w in other.encoder.weights:
        w.assign(tf.zeros_like(w))
    epoch, history = ckpt.load(other_models, other.optimizer, other.variables)
    assert epoch == 2 and history[-1]["loss"] == 1.2
    for a, b in zip(trainer.variables, other.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(trainer.optimizer.variables, other.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpt.clear()
    assert not ckpt.dir.exists()
    assert ckpt.load(other_models, other.optimizer, other.variables) is None


def test_a_run_held_elsewhere_keeps_no_checkpoints(tmp_path):
    # The same run trained twice at once (the same run in two experiments of a study, whose queue workers
    # share the clone's checkpoints): the first holds the folder; the second neither saves, resumes nor
    # removes anything, so neither can load the other's half-written epochs or delete them under it.
    trainer = _trainer(METHODS["crossentropy"])
    models = {"encoder": trainer.encoder, "head": trainer.head}
    first, second = Checkpoints(tmp_path, "key"), Checkpoints(tmp_path, "key")
    assert first.hold() and not second.hold()
    first.save(1, [{"epoch": 1, "loss": 1.5}], models, trainer.optimizer)
    second.save(2, [{"epoch": 2, "loss": 1.0}], models, trainer.optimizer)
    assert first.epochs() == [1] and second.epochs() == []
    assert second.load(models, trainer.optimizer, trainer.variables) is None
    second.clear()
    assert first.epochs() == [1]
    # Once the holder lets go (its run stopped), the next run holds the folder and resumes from it.
    first.release()
    third = Checkpoints(tmp_path, "key")
    assert third.hold() and third.load(models, trainer.optimizer, trainer.variables)[0] == 1
    third.clear()
    assert not third.dir.exists() and Checkpoints(tmp_path, "key").hold()


def test_fingerprint_changes_with_any_part():
    p = Params()
    base = fingerprint("paws", p.methods.paws, p.seed)
    assert base == fingerprint("paws", p.methods.paws, p.seed)
    assert base != fingerprint("paws", replace(p.methods.paws, temperature=0.2), p.seed)
    assert base != fingerprint("paws", p.methods.paws, p.seed + 1)


def test_embed_is_inference_on_scaled_images():
    encoder = get_encoder((32, 32, 3), filters=8, embedding_dim=16)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).batch(4)
    features, labels = embed(encoder, data)
    assert features.shape == (10, 16) and features.dtype == np.float32
    np.testing.assert_array_equal(labels, np.arange(10))
    np.testing.assert_allclose(
        features, encoder(images.astype(np.float32) / 255.0).numpy(), rtol=1e-5, atol=1e-6
    )


def test_only_the_chief_writes_outputs():
    from semisup.training.distribute import is_chief

    assert is_chief(tf.distribute.get_strategy())

    class Resolver:
        def __init__(self, task_type, task_id, jobs):
            self.task_type, self.task_id, self._jobs = task_type, task_id, jobs

        def cluster_spec(self):
            return tf.train.ClusterSpec({job: [f"h{i}:1" for i in range(n)] for job, n in self._jobs.items()})

    class Strategy:
        def __init__(self, resolver):
            self.cluster_resolver = resolver

    assert is_chief(Strategy(Resolver("worker", 0, {"worker": 2})))
    assert not is_chief(Strategy(Resolver("worker", 1, {"worker": 2})))
    assert is_chief(Strategy(Resolver("chief", 0, {"chief": 1, "worker": 2})))
    assert not is_chief(Strategy(Resolver("worker", 0, {"chief": 1, "worker": 2})))


def test_mixed_precision_auto_follows_the_hardware(monkeypatch):
    from semisup.training import precision as train

    monkeypatch.setattr(train, "fast_bfloat16", lambda: True)
    assert train.resolve_mixed_precision("auto") is True
    assert train.resolve_mixed_precision(False) is False
    monkeypatch.setattr(train, "fast_bfloat16", lambda: False)
    assert train.resolve_mixed_precision("auto") is False
    assert train.resolve_mixed_precision(True) is True


def test_cluster_checkpoints_keep_the_last_two_epochs(tmp_path):
    trainer = _trainer(METHODS["paws"])
    models = {"encoder": trainer.encoder}
    ckpt = Checkpoints(tmp_path, "key", keep=2)
    history = []
    saved = {}
    for epoch in (1, 2, 3):
        for w in trainer.encoder.weights:
            w.assign(tf.fill(w.shape, float(epoch)))
        history.append({"epoch": epoch, "loss": 1.0 / epoch})
        ckpt.save(epoch, history, models, trainer.optimizer)
        saved[epoch] = [np.asarray(w) for w in trainer.encoder.weights]
    assert sorted(p.name for p in ckpt.dir.iterdir()) == [
        "state.json",
        "weights-00002.npz",
        "weights-00003.npz",
    ]
    assert ckpt.epochs() == [2, 3]
    other = _trainer(METHODS["paws"])
    # A peer that died before saving epoch 3: every worker resumes after epoch 2.
    epoch, resumed = ckpt.load({"encoder": other.encoder}, other.optimizer, other.variables, epoch=2)
    assert epoch == 2 and [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(saved[2], other.encoder.weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert ckpt.load({"encoder": other.encoder}, other.optimizer, other.variables, epoch=1) is None


def test_the_trainer_augments_with_the_one_seeding_scheme():
    trainer = _trainer(METHODS["paws"])
    rng = np.random.default_rng(1)
    unlabeled = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labeled = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    views, (labeled_view,), crops = trainer._augment(unlabeled, labeled, tf.constant(17, tf.int64), True)
    assert crops == ()
    seeds = aug.step_seeds(0, 17)
    kwargs = aug.from_params(AugmentParams())
    for i, view in enumerate(views):
        np.testing.assert_array_equal(view, aug.augment(unlabeled, seeds[i], part=(0, 1), **kwargs))
    np.testing.assert_array_equal(labeled_view, aug.augment(labeled, seeds[2], part=(0, 1), **kwargs))
    other, _, _ = trainer._augment(unlabeled, labeled, tf.constant(18, tf.int64), True)
    assert not np.array_equal(other[0], views[0])
    # With the labeled batch switched off (SuNCEt after supervised_epochs) the views are the same draws.
    same, none, _ = trainer._augment(unlabeled, labeled, tf.constant(17, tf.int64), False)
    assert none == ()
    for a, b in zip(same, views, strict=True):
        np.testing.assert_array_equal(a, b)


# --- PAWS's options in the trainer: support views and multi-crop -----------------------------------------

OPTIONS = PAWSParams(support_views=2, multicrop=2, multicrop_size=12, label_smoothing=0.1)
# Without XLA: the same views (see augment's docstring), without compiling each new batch shape.
EAGER_AUGMENT = aug.from_params(AugmentParams()) | {"jit_compile": False}


def _paws_trainer(params: PAWSParams = OPTIONS, **encoder_options) -> Trainer:
    keras.utils.set_random_seed(0)
    encoder = get_encoder((32, 32, 3), filters=8, embedding_dim=16, **encoder_options)
    return Trainer(
        METHODS["paws"],
        params,
        encoder=encoder,
        head=None,
        optimizer=keras.optimizers.Adam(),
        augment_kwargs=EAGER_AUGMENT,
        num_classes=4,
        seed=0,
    )


def _options_trainer() -> Trainer:
    return _paws_trainer(OPTIONS, padding="same", pooling="average")


def _images(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    unlabeled = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labeled = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    return unlabeled, labeled, np.array([0, 1, 2, 3])


def test_options_add_views_of_their_own_and_keep_the_reference_views_seeds():
    # Multi-crop on: the two views and the supports are the reference's draws (same seeds) at the preset's
    # raised area scale (CIFAR10's (0.75, 1.0) at 32 px); the second support view and the small crops (the
    # preset's area (0.3, 0.75), OPTIONS' own 12 px) come from seed streams of their own.
    unlabeled, labeled, _ = _images()
    step = tf.constant(17, tf.int64)
    views, labeled_views, crops = _options_trainer()._augment(unlabeled, labeled, step, True)
    seeds = aug.step_seeds(0, 17)
    large = EAGER_AUGMENT | {"crop_scale": (0.75, 1.0)}
    for i, view in enumerate(views):
        np.testing.assert_array_equal(view, aug.augment(unlabeled, seeds[i], **large))
    np.testing.assert_array_equal(labeled_views[0], aug.augment(labeled, seeds[2], **large))
    extra = aug.step_seeds(0, 17, 1, aug.SUPPORT_VIEWS)
    np.testing.assert_array_equal(labeled_views[1], aug.augment(labeled, extra[0], **large))
    ref_views, _, _ = _paws_trainer(PAWSParams())._augment(unlabeled, labeled, step, True)
    np.testing.assert_array_equal(ref_views[0], aug.augment(unlabeled, seeds[0], **EAGER_AUGMENT))
    assert not np.array_equal(views[0], ref_views[0])  # the scale, not the seed, differs
    small = aug.step_seeds(0, 17, 2, aug.SMALL_CROPS)
    kwargs = EAGER_AUGMENT | {"crop_scale": (0.3, 0.75)}
    assert len(crops) == 2
    for k, crop in enumerate(crops):
        assert crop.shape == (6, 12, 12, 3)
        np.testing.assert_array_equal(crop, aug.augment(unlabeled, small[k], size=12, **kwargs))
    assert not np.array_equal(crops[0], crops[1])


def test_default_paws_step_is_the_plain_reference_path():
    # With every option off the trainer computes what it computed before the options: one encoder call
    # on view 1, view 2 and the labeled view (seeds 0, 1, 2 of the step), then paws.loss.
    from semisup.methods import paws

    unlabeled, labeled, labels = _images(2)
    trainer = _paws_trainer(PAWSParams())
    views, labeled_views, crops = trainer._augment(unlabeled, labeled, tf.constant(3, tf.int64), True)
    loss, _, grads = trainer.loss_and_grads(views, labeled_views, tf.constant(labels), crops)
    with tf.GradientTape() as tape:
        seeds = aug.step_seeds(0, 3)
        kwargs = EAGER_AUGMENT
        images = [aug.augment(unlabeled, seeds[i], **kwargs) for i in (0, 1)] + [
            aug.augment(labeled, seeds[2], **kwargs)
        ]
        f1, f2, fl = tf.split(trainer._encode(tf.concat(images, axis=0)), [6, 6, 4])
        plain, _ = tf.function(paws.loss, autograph=False)(f1, f2, fl, tf.constant(labels), 4)
    assert float(loss) == float(plain)
    for a, b in zip(grads, tape.gradient(plain, trainer.variables), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_support_views_and_crops_reach_the_loss_as_the_official_paws():
    # Two support views: the loss sees (2 x 4) supports with their labels repeated; two crops: six more
    # anchors. Against the official loss in float64 on the encoder's own features.
    from tests.test_methods import ref_paws_official

    unlabeled, labeled, labels = _images(3)
    trainer = _options_trainer()
    views, labeled_views, crops = trainer._augment(unlabeled, labeled, tf.constant(5, tf.int64), True)
    loss, _, grads = trainer.loss_and_grads(views, labeled_views, tf.constant(labels), crops)
    feats = lambda xs: [trainer.encoder(x, training=True).numpy().astype(np.float64) for x in xs]  # noqa: E731
    supports = np.concatenate(feats(labeled_views))
    expected = ref_paws_official(
        feats(views), feats(crops), supports, np.tile(labels, 2), 4, 0.1, 0.25, True, 0.1
    )
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-6)
    assert all(np.isfinite(g.numpy()).all() for g in grads) and any(
        np.abs(g.numpy()).max() > 0 for g in grads
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, r"methods\.paws\.multicrop: 2 small crops need .*encoder\.pooling: average"),
        (
            {"encoder.pooling": "average"},
            r"multicrop_size: small crops of 18 pixels \(the cifar10 preset's\) do not survive encoder\.depth=4",
        ),
        (
            {"encoder.pooling": "average", "methods.paws.multicrop_size": 40},
            r"multicrop_size: 40 is larger than the images \(32\)",
        ),
    ],
)
def test_multicrop_settings_the_encoder_cannot_take_are_refused_before_compute(overrides, message):
    from semisup.config import parse_params, resolve_run, with_overrides
    from semisup.core.errors import UserError
    from semisup.training.preflight import check_crops

    raw = with_overrides({}, {"methods.paws.multicrop": 2, **overrides})
    with pytest.raises(UserError, match=message):
        check_crops(
            resolve_run(parse_params(raw), "paws"), 32
        )  # CIFAR10's 18 px: too small for 4 valid convs
    fine = with_overrides(
        raw, {"encoder.pooling": "average", "encoder.padding": "same", "methods.paws.multicrop_size": 14}
    )
    check_crops(resolve_run(parse_params(fine), "paws"), 32)
