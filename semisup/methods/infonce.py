"""InfoNCE between two augmented views (van den Oord et al., 2018; SimCLR, Chen et al., 2020).

Its maths (shared with SuNCEt) is in semisup.methods.common; this module is the method: two unlabeled
views in, the loss and the contrastive accuracy out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from semisup.methods.common import contrastive_loss, info_nce, normalize, nt_xent, top1_accuracy

if TYPE_CHECKING:
    from semisup.methods import InfoNCEParams, LossInputs

__all__ = ["compute", "contrastive_accuracy", "info_nce", "loss", "normalize", "nt_xent"]

loss = contrastive_loss  # InfoNCE (or NT-Xent when `symmetric`) -> (scalar loss, logits, labels)
contrastive_accuracy = top1_accuracy  # fraction of rows whose top-1 logit is the positive


def compute(inputs: LossInputs, params: InfoNCEParams) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Registry entry: the two unlabeled views -> (loss, {"contrastive_acc"})."""
    z1, z2 = inputs.views
    value, logits, labels = loss(z1, z2, params.temperature, params.symmetric)
    return value, {"contrastive_acc": contrastive_accuracy(logits, labels)}
