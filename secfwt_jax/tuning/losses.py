"""The losses of candidate prompts from their label-word logits (what the tuner minimises).

Pure JAX: the data owner computes them in plaintext from revealed logits (reveal="logits"), or
the servers inside the secure program (reveal="loss", tuning/evaluator.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("ce", "hinge", "hinge_max")
# Black-Box Tuning's hinge margin (metrics.py: `self.margin = 2`).
HINGE_MARGIN = 2.0


def candidate_losses(logits, labels, kind: str = "ce"):
    """Mean loss of each candidate. logits (P, B, C), labels (B,) int -> (P,).

    ce: cross-entropy of the softmax over the C label words (BBT's "ce"; BBT divides its mean
    by B once more, a constant factor that rank-based CMA-ES ignores).
    hinge: Black-Box Tuning's default (bbt.py `loss_type='hinge'`, utils.hinge_loss with
    metrics.py's margin 2): mean_b sum_{c != y} max(0, l_c - l_y + 2).
    hinge_max (ours, earlier): mean_b max(0, 1 - (l_y - max_{c != y} l_c)).
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; accepted: {', '.join(LOSSES)}")
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if kind == "ce":
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits, axis=-1) * onehot, -1), axis=-1)
    correct = jnp.sum(logits * onehot, -1)
    if kind == "hinge":
        per_class = jax.nn.relu(logits - correct[..., None] + HINGE_MARGIN) * (1 - onehot)
        return jnp.mean(jnp.sum(per_class, -1), axis=-1)
    other = jnp.max(logits - 1e4 * onehot, -1)
    return jnp.mean(jax.nn.relu(1.0 - (correct - other)), axis=-1)
