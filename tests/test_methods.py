"""Method losses against numpy references written here, hand-checked cases, and the registry's contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from semisup.config import Params
from semisup.methods import (
    METHODS,
    CrossEntropyParams,
    InfoNCEParams,
    LossInputs,
    PAWSParams,
    SuNCEtParams,
    infonce,
    paws,
    suncet,
)
from semisup.methods.load import loss_fn

B, L, D, C = 8, 12, 6, 4

# --- numpy references (float64, loops where they make the definition plain) ---------------------------


def np_normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_log_softmax(row):
    m = row.max()
    return row - m - np.log(np.exp(row - m).sum())


def ref_crossentropy(logits, labels):
    logits = np.asarray(logits, np.float64)
    return -np.mean([np_log_softmax(logits[i])[y] for i, y in enumerate(labels)])


def ref_infonce(z1, z2, tau):
    s = np_normalize(z1) @ np_normalize(z2).T / tau
    return np.mean([-np_log_softmax(s[i])[i] for i in range(len(s))])


def ref_ntxent(z1, z2, tau):
    z = np_normalize(np.concatenate([z1, z2]))
    n, b = len(z), len(z1)
    losses = []
    for i in range(n):
        others = [k for k in range(n) if k != i]
        sims = np.array([z[i] @ z[k] / tau for k in others])
        pos = others.index((i + b) % n)
        losses.append(-np_log_softmax(sims)[pos])
    return np.mean(losses)


def ref_snn_supervised(z, labels, tau):
    z = np_normalize(z)
    losses = []
    for i in range(len(z)):
        others = [j for j in range(len(z)) if j != i]
        if not any(labels[j] == labels[i] for j in others):
            continue
        w = {j: np.exp((z[i] @ z[j] - 1) / tau) for j in others}
        losses.append(-np.log(sum(w[j] for j in others if labels[j] == labels[i]) / sum(w.values())))
    return np.mean(losses) if losses else 0.0


def _snn(v, s, onehot, tau):
    """PAWS's soft nearest-neighbour prediction of anchors `v` from supports `s` (their label rows)."""
    logits = np_normalize(v) @ np_normalize(s).T / tau
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (w / w.sum(axis=1, keepdims=True)) @ onehot


def _sharpen(p, T):
    q = p ** (1 / T)
    return q / q.sum(axis=1, keepdims=True)


def ref_paws(v1, v2, s, labels, num_classes, tau, T, me_max, ls):
    onehot = np.full((len(labels), num_classes), ls / num_classes)
    onehot[np.arange(len(labels)), labels] += 1 - ls

    def predict(v):
        return _snn(v, s, onehot, tau)

    def sharp(p):
        return _sharpen(p, T)

    p1, p2 = predict(v1), predict(v2)
    ce = 0.5 * (np.mean(-(sharp(p2) * np.log(p1)).sum(1)) + np.mean(-(sharp(p1) * np.log(p2)).sum(1)))
    avg = sharp(np.concatenate([p1, p2])).mean(0)
    return ce + (np.sum(avg * np.log(avg)) if me_max else 0.0)


def reference(name, params, views, labeled, labels):
    if name == "crossentropy":
        return ref_crossentropy(labeled, labels)
    contrastive = ref_ntxent if getattr(params, "symmetric", False) else ref_infonce
    if name == "infonce":
        return contrastive(*views, params.temperature)
    if name == "suncet":
        sup = ref_snn_supervised(labeled, labels, params.temperature)
        return contrastive(*views, params.temperature) + params.supervised_weight * sup
    if name == "paws":
        p = params
        return ref_paws(
            *views, labeled, labels, C, p.temperature, p.sharpen_temperature, p.me_max, p.label_smoothing
        )
    raise AssertionError(f"no numpy reference for {name}: add one")


# --- helpers ------------------------------------------------------------------------------------------


def make_inputs(name, seed=0, dtype=np.float32, scale=1.0):
    """Random inputs shaped as method `name` declares; labels cover every class at least twice."""
    rng = np.random.default_rng(seed)
    method = METHODS[name]
    views = tuple(tf.constant(scale * rng.normal(size=(B, D)), dtype) for _ in range(method.unlabeled_views))
    labels = np.arange(L) % C
    rng.shuffle(labels)
    labeled = None
    if method.uses_labeled:
        width = C if method.has_head else D
        labeled = tf.constant(scale * rng.normal(size=(L, width)), dtype)
    return LossInputs(views, labeled, tf.constant(labels, tf.int64), C)


def as_np(inputs):
    views = [v.numpy().astype(np.float64) for v in inputs.views]
    labeled = None if inputs.labeled is None else inputs.labeled.numpy().astype(np.float64)
    return views, labeled, inputs.labels.numpy()


CASES = [
    ("crossentropy", CrossEntropyParams()),
    ("infonce", InfoNCEParams()),
    ("infonce", InfoNCEParams(temperature=0.5, symmetric=True)),
    ("suncet", SuNCEtParams()),
    ("suncet", SuNCEtParams(temperature=0.3, supervised_weight=0.5, symmetric=True)),
    ("paws", PAWSParams()),
    ("paws", PAWSParams(temperature=0.2, sharpen_temperature=0.5, me_max=False, label_smoothing=0.1)),
]
DEFAULTS = {
    "crossentropy": CrossEntropyParams(),
    "infonce": InfoNCEParams(),
    "suncet": SuNCEtParams(),
    "paws": PAWSParams(),
}


# --- registry-wide --------------------------------------------------------------------------------------


def test_every_method_has_a_reference_case_and_a_params_section():
    assert set(METHODS) == set(Params().method_names) == {name for name, _ in CASES} == set(DEFAULTS)


@pytest.mark.parametrize("name,params", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_loss_matches_numpy_reference(name, params):
    inputs = make_inputs(name, seed=1)
    value, logs = loss_fn(METHODS[name])(inputs, params)
    assert value.dtype == tf.float32 and value.shape == ()
    np.testing.assert_allclose(value.numpy(), reference(name, params, *as_np(inputs)), rtol=1e-5, atol=1e-5)
    assert logs and all(v.dtype == tf.float32 and v.shape == () for v in logs.values())


@pytest.mark.parametrize("name", list(METHODS))
def test_gradients_are_finite_and_nonzero(name):
    inputs = make_inputs(name, seed=2)
    tensors = [tf.Variable(v) for v in (*inputs.views, inputs.labeled) if v is not None]
    with tf.GradientTape() as tape:
        views = tuple(tensors[: len(inputs.views)])
        labeled = tensors[-1] if inputs.labeled is not None else None
        value, _ = loss_fn(METHODS[name])(LossInputs(views, labeled, inputs.labels, C), DEFAULTS[name])
    for grad in tape.gradient(value, tensors):
        assert grad is not None and np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)


@pytest.mark.parametrize("name,params", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_runs_under_xla(name, params):
    inputs = make_inputs(name, seed=3)
    method = METHODS[name]

    @tf.function(jit_compile=True)
    def step(views, labeled, labels):
        return loss_fn(method)(LossInputs(views, labeled, labels, C), params)

    value, logs = step(inputs.views, inputs.labeled, inputs.labels)
    eager, eager_logs = loss_fn(method)(inputs, params)
    np.testing.assert_allclose(value.numpy(), eager.numpy(), rtol=1e-5)
    assert logs.keys() == eager_logs.keys()


@pytest.mark.parametrize("name", list(METHODS))
def test_float16_inputs_give_a_float32_loss_without_overflow(name):
    # |features| ~ 30: exp(cos / 0.1) would overflow float16 (max 65504) if the maths stayed in float16.
    half = make_inputs(name, seed=4, dtype=np.float16, scale=30.0)
    full = LossInputs(
        tuple(tf.cast(v, tf.float32) for v in half.views),
        None if half.labeled is None else tf.cast(half.labeled, tf.float32),
        half.labels,
        C,
    )
    value, logs = loss_fn(METHODS[name])(half, DEFAULTS[name])
    assert value.dtype == tf.float32 and np.isfinite(value.numpy())
    assert all(v.dtype == tf.float32 for v in logs.values())
    np.testing.assert_allclose(
        value.numpy(), loss_fn(METHODS[name])(full, DEFAULTS[name])[0].numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_declared_needs_match_what_compute_takes(name):
    # compute takes exactly the encodings the method declares, so a trainer never encodes in vain.
    method, params = METHODS[name], DEFAULTS[name]
    inputs = make_inputs(name, seed=5)
    value = loss_fn(method)(inputs, params)[0]
    assert np.isfinite(value.numpy())
    extra = tf.constant(np.random.default_rng(5).normal(size=(B, D)).astype(np.float32))
    wrong_views = () if method.unlabeled_views else (extra, extra)
    with pytest.raises(ValueError, match="unlabeled views"):
        loss_fn(method)(LossInputs(wrong_views, inputs.labeled, inputs.labels, C), params)
    wrong_labeled = None if method.uses_labeled else extra
    with pytest.raises(ValueError, match="labeled"):
        loss_fn(method)(LossInputs(inputs.views, wrong_labeled, tf.range(B), C), params)
    assert method.unlabeled_views in (0, 2)
    assert method.has_head == (name == "crossentropy") and (not method.has_head or method.uses_labeled)
    if not method.uses_labeled:  # labels alone (cheap, always in the batch) are ignored
        np.testing.assert_equal(
            loss_fn(method)(LossInputs(inputs.views, None, tf.range(B), C), params)[0], value
        )


def test_head_width_must_match_num_classes():
    inputs = make_inputs("crossentropy")
    with pytest.raises(ValueError, match="num_classes"):
        loss_fn(METHODS["crossentropy"])(
            LossInputs((), inputs.labeled, inputs.labels, C + 1), DEFAULTS["crossentropy"]
        )


def test_paws_needs_num_classes():
    inputs = make_inputs("paws")
    with pytest.raises(ValueError, match="num_classes"):
        loss_fn(METHODS["paws"])(LossInputs(inputs.views, inputs.labeled, inputs.labels, 0), DEFAULTS["paws"])


# --- InfoNCE by hand ------------------------------------------------------------------------------------


def test_infonce_identical_orthonormal_views_is_near_zero():
    z = tf.eye(B, D + B)  # B orthonormal rows
    value, logits, labels = infonce.loss(z, z, temperature=0.01)
    # Exactly log(1 + (B-1) exp(-1/tau)) ~ 7e-43 here.
    assert 0.0 <= value.numpy() < 1e-6
    assert infonce.contrastive_accuracy(logits, labels).numpy() == 1.0


@pytest.mark.parametrize("symmetric,negatives", [(False, B), (True, 2 * B - 1)])
def test_infonce_identical_rows_is_log_of_candidates(symmetric, negatives):
    z = tf.ones((B, D)) * 3.0
    value, logits, labels = infonce.loss(z, z, temperature=0.1, symmetric=symmetric)
    np.testing.assert_allclose(value.numpy(), math.log(negatives), rtol=1e-6)
    assert logits.shape == ((2 * B, 2 * B) if symmetric else (B, B)) and labels.shape == logits.shape[:1]


def test_ntxent_positive_is_the_other_view():
    _, _, labels = infonce.nt_xent(tf.ones((3, 2)), tf.ones((3, 2)), 0.1)
    assert labels.numpy().tolist() == [3, 4, 5, 0, 1, 2]


# --- SuNCEt by hand -------------------------------------------------------------------------------------

E0, E1 = [1.0, 0.0], [0.0, 1.0]


def test_suncet_excludes_self_from_numerator_and_denominator():
    # Each point's classmate is orthogonal (weight e^-1 at tau=1); of the other class one is identical
    # (weight 1) and one orthogonal (e^-1). Self excluded: p = e^-1 / (1 + 2e^-1) = 1 / (e + 2).
    # Were self included (weight 1 in both sums) p would be 1/2 and the loss log 2.
    z = tf.constant([E0, E1, E0, E1])
    value = suncet.supervised_loss(z, tf.constant([0, 0, 1, 1]), temperature=1.0)
    np.testing.assert_allclose(value.numpy(), math.log(math.e + 2), rtol=1e-6)


def test_suncet_leaves_classes_with_one_member_out_of_the_mean():
    # Rows 0, 1 (class 0) as above with point 2 (class 1, alone): p_0 = e^-1 / (e^-1 + 1) = 1/(e + 1),
    # p_1 = e^-1 / (e^-1 + e^-1) = 1/2; row 2 has no classmate and is left out.
    z = tf.Variable([E0, E1, E0])
    with tf.GradientTape() as tape:
        value = suncet.supervised_loss(z, tf.constant([0, 0, 1]), temperature=1.0)
    np.testing.assert_allclose(value.numpy(), (math.log(math.e + 1) + math.log(2)) / 2, rtol=1e-6)
    assert np.all(np.isfinite(tape.gradient(value, z).numpy()))


def test_suncet_is_full_suncet_until_its_supervised_epochs_and_infonce_alone_after():
    params = SuNCEtParams(temperature=0.2, supervised_weight=0.5, supervised_epochs=2)
    method = METHODS["suncet"]
    assert [method.encodes_labeled(params, epoch) for epoch in (1, 2, 3, 4)] == [True, True, False, False]
    assert all(method.encodes_labeled(SuNCEtParams(), epoch) for epoch in (1, 2, 100))  # null: never off
    inputs = make_inputs("suncet")
    views, labeled, labels = as_np(inputs)
    compute = loss_fn(method)
    before, _ = compute(
        inputs, params
    )  # an epoch <= supervised_epochs: the trainer encodes the labeled batch
    supervised = ref_snn_supervised(labeled, labels, 0.2)
    np.testing.assert_allclose(before.numpy(), ref_infonce(*views, 0.2) + 0.5 * supervised, rtol=1e-5)
    after, logs = compute(LossInputs(inputs.views, None, None, C), params)  # after: nothing labeled
    np.testing.assert_allclose(after.numpy(), ref_infonce(*views, 0.2), rtol=1e-5)
    assert float(logs["supervised_loss"]) == 0.0 and float(logs["contrastive_loss"]) == float(after)
    with pytest.raises(ValueError, match="paws: needs the labeled batch"):  # a method without the switch
        loss_fn(METHODS["paws"])(LossInputs(inputs.views, None, None, C), PAWSParams())


def test_suncet_all_singletons_is_zero_with_zero_gradient():
    z = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = suncet.supervised_loss(z, tf.constant([0, 1, 2, 3]), temperature=0.1)
    assert value.numpy() == 0.0
    assert np.all(tape.gradient(value, z).numpy() == 0.0)


# --- PAWS by hand ---------------------------------------------------------------------------------------


def test_sharpen_with_t1_is_identity_and_squares_with_t_half():
    p = tf.constant([[0.2, 0.8], [0.5, 0.5], [0.1, 0.9]])
    np.testing.assert_allclose(paws.sharpen(p, 1.0).numpy(), p.numpy(), rtol=1e-6)
    np.testing.assert_allclose(paws.sharpen(p, 0.5).numpy()[0], [0.04 / 0.68, 0.64 / 0.68], rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_soft_nn_rows_sum_to_one(smoothing):
    rng = np.random.default_rng(0)
    onehot = paws.smooth_onehot(tf.constant([0, 1, 2, 3, 0, 1]), C, smoothing)
    np.testing.assert_allclose(onehot.numpy()[0], [1 - smoothing + smoothing / C] + [smoothing / C] * 3)
    probs = paws.snn(rng.normal(size=(5, D)), rng.normal(size=(6, D)), onehot, 0.1)
    np.testing.assert_allclose(tf.reduce_sum(probs, axis=1).numpy(), np.ones(5), rtol=1e-6)


def test_me_max_term_is_minus_log_c_when_the_mean_is_uniform():
    assert paws.mean_entropy(tf.fill((3, C), 1.0 / C)).numpy() == pytest.approx(math.log(C), rel=1e-6)
    # One orthonormal support per class and view k = support k: every prediction is the same vector with
    # its peak moved to class k, so the mean sharpened prediction over the C views is exactly uniform.
    supports = tf.eye(C, D)
    args = (supports, supports, supports, tf.range(C), C)
    with_term, logs = paws.loss(*args, me_max=True)
    without, _ = paws.loss(*args, me_max=False)
    np.testing.assert_allclose((with_term - without).numpy(), -math.log(C), rtol=1e-6)
    np.testing.assert_allclose(logs["me_max_entropy"].numpy(), math.log(C), rtol=1e-6)


def _paws_probs(seed=0):
    rng = np.random.default_rng(seed)
    v1, v2 = (tf.Variable(rng.normal(size=(B, D)).astype(np.float32)) for _ in range(2))
    supports, labels = tf.constant(rng.normal(size=(L, D)).astype(np.float32)), tf.range(L) % C
    return v1, v2, supports, labels


def test_paws_targets_carry_no_gradient():
    v1, v2, supports, labels = _paws_probs()
    onehot = paws.smooth_onehot(labels, C)
    with tf.GradientTape() as tape:
        # View 2 only produces the target here; its own prediction branch is not part of this loss.
        value = paws.cross_entropy(
            paws.targets(paws.snn(v2, supports, onehot, 0.1), 0.25), paws.snn(v1, supports, onehot, 0.1)
        )
    grad = tape.gradient(value, v2)
    assert grad is None or np.all(grad.numpy() == 0)


def test_paws_loss_gradient_reaches_a_view_only_through_its_own_prediction():
    # Without me-max, d loss / d v2 must equal d/d v2 of the half in which v2 is predicted, the target
    # from v1 being constant; were the targets differentiable, the other half would add to it.
    v1, v2, supports, labels = _paws_probs(1)
    onehot = paws.smooth_onehot(labels, C)
    with tf.GradientTape(persistent=True) as tape:
        full, _ = paws.loss(v1, v2, supports, labels, C, me_max=False)
        p1, p2 = paws.snn(v1, supports, onehot, 0.1), paws.snn(v2, supports, onehot, 0.1)
        own_half = 0.5 * paws.cross_entropy(tf.constant(paws.sharpen(p1, 0.25).numpy()), p2)
    np.testing.assert_allclose(
        tape.gradient(full, v2).numpy(), tape.gradient(own_half, v2).numpy(), atol=1e-7
    )


def test_me_max_maximises_the_entropy_of_the_mean_sharpened_prediction_with_gradient():
    # The term is -H(mean sharpen(prediction)) over both views (facebookresearch/suncet). Its value equals
    # that of the mean target, so only the gradient tells them apart: the targets' entropy would have none.
    v1, v2, supports, labels = _paws_probs(2)
    onehot = paws.smooth_onehot(labels, C)
    with tf.GradientTape(persistent=True) as tape:
        term = (
            paws.loss(v1, v2, supports, labels, C)[0]
            - paws.loss(v1, v2, supports, labels, C, me_max=False)[0]
        )
        probs = tf.concat([paws.snn(v, supports, onehot, 0.1) for v in (v1, v2)], axis=0)
        expected = -paws.mean_entropy(paws.sharpen(probs, 0.25))
    np.testing.assert_allclose(term.numpy(), expected.numpy(), rtol=1e-5)
    grad = tape.gradient(term, v1).numpy()
    assert np.any(np.abs(grad) > 1e-4)
    np.testing.assert_allclose(grad, tape.gradient(expected, v1).numpy(), atol=1e-6)


# --- PAWS as the paper trains it: multi-crop and the support labels --------------------------------------


def ref_paws_official(views, crops, s, labels, num_classes, tau, T, me_max, ls, present_only=False):
    """facebookresearch/suncet src/losses.py init_paws_loss in float64: anchors are view 1, view 2, then
    the crops; the views' targets are the other view's sharpened predictions, each crop's their mean;
    targets below 1e-4 are zeroed; cross-entropy and me-max over every anchor."""
    classes = sorted(set(labels.tolist())) if present_only else range(num_classes)
    onehot = np.zeros((len(labels), num_classes))
    onehot[:, list(classes)] = ls / len(classes)
    onehot[np.arange(len(labels)), labels] += 1 - ls

    def predict(v):
        return _snn(v, s, onehot, tau)

    def sharp(p):
        return _sharpen(p, T)

    b = len(views[0])
    probs = predict(np.concatenate([*views, *crops]))
    targets = sharp(predict(np.concatenate([views[1], views[0]])))
    mean = 0.5 * (targets[:b] + targets[b:])
    targets = np.concatenate([targets] + [mean] * len(crops))
    targets[targets < 1e-4] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.mean(np.sum(np.where(targets > 0, -targets * np.log(probs), 0.0), axis=1))
        avg = sharp(probs).mean(axis=0)
        return loss + (np.sum(np.where(avg > 0, avg * np.log(avg), 0.0)) if me_max else 0.0)


@pytest.mark.parametrize(
    "crops,params",
    [
        (1, PAWSParams(multicrop=1)),
        (3, PAWSParams(multicrop=3, label_smoothing=0.1)),
        (2, PAWSParams(multicrop=2, temperature=0.2, sharpen_temperature=0.5, me_max=False)),
    ],
)
def test_paws_multicrop_matches_the_official_loss(crops, params):
    inputs = make_inputs("paws", seed=5)
    rng = np.random.default_rng(6)
    small = tuple(tf.constant(rng.normal(size=(B, D)), tf.float32) for _ in range(crops))
    inputs = LossInputs(inputs.views, inputs.labeled, inputs.labels, C, crops=small)
    value, logs = loss_fn(METHODS["paws"])(inputs, params)
    views, labeled, labels = as_np(inputs)
    expected = ref_paws_official(
        views,
        [c.numpy().astype(np.float64) for c in small],
        labeled,
        labels,
        C,
        params.temperature,
        params.sharpen_temperature,
        params.me_max,
        params.label_smoothing,
    )
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert set(logs) == {"ce", "me_max_entropy"}


def test_paws_multicrop_pulls_a_crop_to_the_mean_of_the_two_targets_and_carries_its_gradient():
    # One crop, me-max off: the loss is (CE(t1, p1) + CE(t2, p2) + CE((t1 + t2) / 2, p_crop)) / 3, and
    # the crop's gradient is that of its own third alone (the targets are constants).
    v1, v2, supports, labels = _paws_probs(3)
    crop = tf.Variable(np.random.default_rng(4).normal(size=(B, D)).astype(np.float32))
    onehot = paws.smooth_onehot(labels, C)
    with tf.GradientTape(persistent=True) as tape:
        value, _ = paws.loss(v1, v2, supports, labels, C, me_max=False, crops=(crop,))
        p1, p2, pc = (paws.snn(v, supports, onehot, 0.1) for v in (v1, v2, crop))
        t1, t2 = (tf.constant(paws.sharpen(p, 0.25).numpy()) for p in (p2, p1))
        zero = lambda t: tf.where(t < 1e-4, 0.0, t)  # noqa: E731
        own = paws.cross_entropy(zero(0.5 * (t1 + t2)), pc) / 3
        by_hand = (paws.cross_entropy(zero(t1), p1) + paws.cross_entropy(zero(t2), p2)) / 3 + own
    np.testing.assert_allclose(value.numpy(), by_hand.numpy(), rtol=1e-6)
    grad = tape.gradient(value, crop).numpy()
    assert np.any(np.abs(grad) > 1e-5)
    np.testing.assert_allclose(grad, tape.gradient(own, crop).numpy(), atol=1e-7)


def test_stratified_supports_smooth_over_the_classes_of_the_batch():
    labels = tf.constant([0, 1, 1, 0])  # 2 of C = 4 classes in the batch
    present = paws.smooth_onehot(labels, C, 0.2, present_only=True).numpy()
    np.testing.assert_allclose(present[0], [0.9, 0.1, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(present[1], [0.1, 0.9, 0.0, 0.0], rtol=1e-6)
    # Every class present: the plain smoothing, to the bit.
    every = tf.constant([0, 1, 2, 3, 2])
    np.testing.assert_array_equal(
        paws.smooth_onehot(every, C, 0.2, present_only=True).numpy(),
        paws.smooth_onehot(every, C, 0.2).numpy(),
    )
    # Through compute: supports_per_class switches it on, against the official labels matrix.
    inputs = make_inputs("paws", seed=7)
    partial = tf.constant(np.arange(L) % 2, tf.int64)
    crop = tf.constant(np.random.default_rng(8).normal(size=(B, D)), tf.float32)
    inputs = LossInputs(inputs.views, inputs.labeled, partial, C, crops=(crop,))
    params = PAWSParams(multicrop=1, label_smoothing=0.2, supports_per_class=3, classes_per_batch=2)
    value, _ = loss_fn(METHODS["paws"])(inputs, params)
    views, labeled, labels_np = as_np(inputs)
    expected = ref_paws_official(
        views,
        [crop.numpy().astype(np.float64)],
        labeled,
        labels_np,
        C,
        0.1,
        0.25,
        True,
        0.2,
        present_only=True,
    )
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)
