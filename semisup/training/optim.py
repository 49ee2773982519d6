"""The optimizer and its learning-rate schedule, from the `train` params.

The reference recipe is Adam at a constant 1e-3; the papers (SimCLR, SuNCEt, PAWS) train with SGD and
Nesterov momentum (LARS at large batches), a linear warmup and a cosine decay. Keras has all but LARS:
keras.optimizers.SGD and schedules.CosineDecay, whose warmup is built in. The schedule is a function of
the optimizer's step counter, which checkpoints hold, so a resumed run continues it where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from semisup.config import TrainParams


def learning_rate(train: TrainParams, steps_per_epoch: int) -> float | keras.optimizers.schedules.CosineDecay:
    """The rate of step s (from 0): a float for the reference (constant, no warmup); otherwise linear from
    0 at step 0 to `learning_rate` at the warmup's end, then cosine to `final_learning_rate` at the last
    step (train.epochs x steps_per_epoch - 1), or constant after the warmup."""
    if train.lr_schedule == "constant" and train.warmup_epochs == 0:
        return train.learning_rate
    warmup = train.warmup_epochs * steps_per_epoch
    decay = train.epochs * steps_per_epoch - warmup - 1  # the last step sits at the end of the decay
    # alpha is the fraction of the peak rate reached at the end: 1 keeps it constant after the warmup.
    alpha = train.final_learning_rate / train.learning_rate if train.lr_schedule == "cosine" else 1.0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(decay, 1),
        alpha=alpha,
        warmup_target=train.learning_rate,
        warmup_steps=warmup,
    )


def make_optimizer(
    train: TrainParams, steps_per_epoch: int, variables: Sequence[keras.Variable]
) -> keras.optimizers.Optimizer:
    """train.optimizer over `variables` (not built: the trainer builds it in the strategy's scope).

    With the defaults this is keras.optimizers.Adam(learning_rate=train.learning_rate), the reference's.
    Weight decay is Keras's decoupled one (AdamW, SGDW: Loshchilov & Hutter, 2019): each step
    w -= lr_t * weight_decay * w before the gradient step, on kernels only; biases and BatchNorm's scales
    and offsets (every variable of rank 1 or less) never decay, as in the PAWS code. (The official code's
    torch SGD adds weight_decay * w to the gradient instead: with momentum the two differ.)
    """
    rate = learning_rate(train, steps_per_epoch)
    decay = train.weight_decay or None  # None: no weight-decay step at all, as Adam() has by default
    if train.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            rate, momentum=train.momentum, nesterov=train.nesterov, weight_decay=decay
        )
    else:
        optimizer = keras.optimizers.Adam(learning_rate=rate, weight_decay=decay)
    if decay is not None:
        optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])
    return optimizer
