"""The projection head: an MLP between the encoder and the loss, used only while training.

SimCLR (Chen et al., 2020) and the PAWS / SuNCEt code (facebookresearch/suncet, `fc`) put an MLP on top
of the encoder and apply the loss to its output; the representation kept is the encoder's output before
it. Here `layers` Dense layers, BatchNorm + ReLU after each but the last: 2 is SimCLR's Dense -> BN ->
ReLU -> Dense, 3 the PAWS code's Linear-BN-ReLU-Linear-BN-ReLU-Linear. BatchNorm keeps Keras's defaults
(epsilon 1e-3, where torch's is 1e-5): a unit whose batch variance is near 0 scales rounding noise by
1/sqrt(epsilon): with 1e-5, 1 and 2 replicas' losses had drifted 9x further apart after 8 steps of a
tiny SuNCEt run with this head (3.5e-5 against 4e-6).
"""

from __future__ import annotations

import keras


def get_projector(
    input_dim: int, *, layers: int, hidden: int, output_dim: int, name: str = "projector"
) -> keras.Model | None:
    """Embeddings (B, input_dim) -> projections (B, output_dim); None when `layers` is 0 (no head).

    Built at once, so its variables exist before an optimizer sees them. Its BatchNorm layers normalise
    over the batch they are called on: the trainer calls it on the gathered global batch, so 1 and N
    replicas see the same statistics (see semisup.training.train).
    """
    if layers == 0:
        return None
    # One policy object per layer, named after the global one, as get_encoder does (see its comment).
    policy = keras.config.dtype_policy().name
    stack: list[keras.layers.Layer] = [keras.Input((input_dim,), name="embeddings")]
    for i in range(layers - 1):
        stack += [
            keras.layers.Dense(hidden, dtype=policy, name=f"proj_dense{i + 1}"),
            keras.layers.BatchNormalization(dtype=policy, name=f"proj_bn{i + 1}"),
            keras.layers.ReLU(dtype=policy, name=f"proj_relu{i + 1}"),
        ]
    stack.append(keras.layers.Dense(output_dim, dtype=policy, name=f"proj_dense{layers}"))
    return keras.Sequential(stack, name=name)
