"""Gradient baselines for the cost comparison: full fine-tuning (SFT) and gradient prompt tuning.

Both are one pure function per optimizer step, so the same step runs in plaintext (jax.jit) and
under MPC (compiled through SPU as ONE secure program: forward, jax.grad backward and the Adam
update; weights and optimizer state secret and resident in the parties):

    step = sft_step_fn(config, label_word_ids)
    params, opt_state, loss = step(params, opt_state, embeds, mask, mask_onehot, labels_onehot)
    step = prompt_step_fn(config, label_word_ids)
    prompt, opt_state, loss = step(params, prompt, opt_state, embeds, mask, mask_onehot,
                                   labels_onehot)

Shapes: embeds (B, S, H) from `secfwt_jax.model.embed_fn` (the frozen lookup, computed once as
in the forward-only method); mask (B, S); mask_onehot (B, S) with one 1 at each <mask>;
labels_onehot (B, C); prompt (L, H). The loss is the forward-only method's: the mean
cross-entropy of the softmax over the C label words at the mask position
(`classification_loss`, equal to `secfwt_jax.tuning.evaluator.candidate_losses(..., "ce")`),
computed from `secfwt_jax.model.verbalizer_fn` with P = 1 candidate.

What SFT trains: every parameter except the embedding tables (word, position, token type).
The examples' embeddings enter the step as inputs (as in the forward-only method), so the
tables would get gradient only in the C label-word rows of the tied decoder; an Adam update of
the whole (V, H) word table (51M entries for RoBERTa-large) would dominate the step without
changing what is learnt here. Leaving them out makes our SFT cheaper than a literal full
fine-tuning, so ratios "forward-only vs SFT" computed from it are conservative.

Adam in fixed point (SPU FM64, 18 fraction bits: resolution 2^-18 ~ 3.8e-6). optax.adam's
second moment is nu = b2 nu + (1 - b2) g^2; with g ~ 1e-3 the term (1 - b2) g^2 ~ 1e-9 is far
below the resolution and rounds to 0, and eps = 1e-8 is 0 as well, which turns the update
m / (sqrt(nu) + eps) into a division by ~0: measured under ABY3, optax.adam's first step was
off by up to 56 x the learning rate (5 x with gradient scaling alone). `fixed_point_adam` is
the same update in real arithmetic (Kingma & Ba 2015, Alg. 1; tested against optax.adam)
with three changes that only matter in fixed point:
- loss scaling (as in mixed-precision training): the steps differentiate loss_scale x loss, so
  the backward's values stay far above the resolution. Without it the secure gradients of the
  tiny test model were wrong by more than their own size (updates off by ~0.5 lr); with it the
  updates match plaintext within 0.04 lr;
- eps is scaled by the same factor, so Adam's update is unchanged;
- the second moment is kept without its (1 - b2) factor (`scale_by_fixed_point_adam`).
Defaults, from measurements of SPU's ABY3 sqrt and division: eps 1e-4 (~26 LSB; optax's 1e-8
is 0 in fixed point); loss_scale 2^8: the scaled gradient's square stays within the range
where SPU's sqrt is accurate (it returned 0 for 1e6 and was within 1% from ~1e-5 to 1e4) for
|g| up to ~0.4 on the first step; the running sum nu_sum grows to ~g^2 / (1 - b2), so long
runs need loss_scale <= ~0.1 / max |g|. Known limit: with large weights (initializer range
0.3 on the tiny model) the secure gradients are wrong even with loss scaling while the loss
is right; with RoBERTa's 0.02 they match (test_baselines).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .config import ModelConfig
from .model import verbalizer_fn

FROZEN = ("word_embeddings", "position_embeddings", "token_type_embeddings")
DEFAULT_LOSS_SCALE = 2.0**8
DEFAULT_EPS = 1e-4


def classification_loss(logits, labels_onehot):
    """Mean cross-entropy over the label words. logits (P, B, C), labels_onehot (B, C) -> (P,).

    The forward-only method's "ce" loss (Black-Box Tuning; candidate_losses with kind "ce"),
    written with one-hot labels so that the secure program needs no argmax.
    """
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits, axis=-1) * labels_onehot, -1), axis=-1)


class FixedPointAdamState(NamedTuple):
    """count: steps taken (int32); mu: first moment; nu_sum: second moment divided by (1 - b2),
    i.e. the running sum nu_sum_t = b2 nu_sum_{t-1} + g_t^2."""

    count: jax.Array
    mu: Any
    nu_sum: Any


def scale_by_fixed_point_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = DEFAULT_EPS,
) -> optax.GradientTransformation:
    """optax.scale_by_adam(b1, b2, eps) rearranged for fixed point (same value in reals).

    Kingma & Ba (2015), Alg. 1: m_t = b1 m + (1 - b1) g; v_t = b2 v + (1 - b2) g^2;
    update = m_t / (1 - b1^t) / (sqrt(v_t / (1 - b2^t)) + eps). Here the second moment is kept
    as nu_sum = v / (1 - b2) (no multiplication of g^2 by 1 - b2 ~ 1e-3, which would round
    small g^2 to 0 in fixed point) and the update is
    m_t / (1 - b1^t) / (sqrt(nu_sum_t) * sqrt((1 - b2) / (1 - b2^t)) + eps).
    """

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return FixedPointAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(updates, state, params=None):
        del params
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu_sum = jax.tree_util.tree_map(lambda v, g: b2 * v + g * g, state.nu_sum, updates)
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu_scale = 1.0 / (1.0 - b1**t)
        nu_scale = jnp.sqrt((1.0 - b2) / (1.0 - b2**t))
        out = jax.tree_util.tree_map(
            lambda m, v: m * mu_scale / (jnp.sqrt(v) * nu_scale + eps), mu, nu_sum
        )
        return out, FixedPointAdamState(count, mu, nu_sum)

    return optax.GradientTransformation(init, update)


def fixed_point_adam(
    learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = DEFAULT_EPS,
    loss_scale: float = DEFAULT_LOSS_SCALE,
) -> optax.GradientTransformation:
    """Adam for fixed point, fed with gradients of loss_scale x loss (the steps below take the
    same loss_scale): in real arithmetic exactly optax.adam(learning_rate, b1, b2, eps) on the
    gradients of the loss (tested). eps is scaled by loss_scale (Adam's update is then
    unchanged) and the second moment is kept without the (1 - b2) factor
    (`scale_by_fixed_point_adam`), so that g^2 and eps stay many LSBs above 0 (module
    docstring)."""
    if loss_scale <= 0:
        raise ValueError(f"loss_scale must be positive, got {loss_scale}")
    return optax.chain(
        scale_by_fixed_point_adam(b1, b2, eps * loss_scale), optax.scale(-learning_rate),
    )


def split_params(params: dict) -> tuple[dict, dict]:
    """(trainable, frozen) top-level entries of a model's params: the embedding tables FROZEN
    are frozen, everything else is trained by SFT."""
    missing = [k for k in FROZEN if k not in params]
    if missing:
        raise ValueError(
            f"params lack the embedding tables {missing}; top-level keys: {list(params)}"
        )
    return ({k: v for k, v in params.items() if k not in FROZEN},
            {k: v for k, v in params.items() if k in FROZEN})


def _loss_fn(config: ModelConfig, label_word_ids: Sequence[int], prompt_mode: str):
    f = verbalizer_fn(config, label_word_ids, prompt_mode)

    def loss(params, prompt, embeds, mask, mask_onehot, labels_onehot):
        return classification_loss(f(params, embeds, mask, mask_onehot, prompt), labels_onehot)[0]

    return loss


def pack_state(state):
    """Optimizer state as stored between steps: every leaf with a leading axis of length 1.

    Why: the secure backend hands a 0-d secret input to SPU as shape (1,), and optax's Adam
    step count is 0-d, so `count + 1` fails inside SPU with a shape mismatch (secfwt_jax
    backend, spu 0.9.5). With the extra axis no leaf is 0-d; `unpack_state` undoes it inside
    the step (a reshape: no cost under MPC).
    """
    return jax.tree_util.tree_map(lambda x: jnp.reshape(x, (1, *jnp.shape(x))), state)


def unpack_state(state):
    """Inverse of `pack_state`."""
    return jax.tree_util.tree_map(lambda x: jnp.reshape(x, jnp.shape(x)[1:]), state)


def sft_init(params: dict, optimizer: optax.GradientTransformation):
    """Packed optimizer state of SFT (see `pack_state`): over the trainable part only."""
    return pack_state(optimizer.init(split_params(params)[0]))


def prompt_init(prompt, optimizer: optax.GradientTransformation):
    """Packed optimizer state of prompt tuning (see `pack_state`). prompt (L, H)."""
    return pack_state(optimizer.init(prompt))


def sft_grad_fn(
    config: ModelConfig, label_word_ids: Sequence[int], loss_scale: float = DEFAULT_LOSS_SCALE,
):
    """grad(params, embeds, mask, mask_onehot, labels_onehot) -> (grads of the trainable
    params, loss): the forward and backward part of one SFT step (`sft_step_fn` is this
    followed by `sft_update_fn`). The gradient is that of loss_scale x loss; the loss is
    returned unscaled."""
    loss = _loss_fn(config, label_word_ids, "cat_pre_ln")

    def grad(params, embeds, mask, mask_onehot, labels_onehot):
        trainable, frozen = split_params(params)
        prompt = jnp.zeros((1, 0, config.hidden_size), embeds.dtype)

        def of_trainable(t):
            return loss_scale * loss({**t, **frozen}, prompt, embeds, mask, mask_onehot,
                                     labels_onehot)

        value, grads = jax.value_and_grad(of_trainable)(trainable)
        return grads, value / loss_scale

    return grad


def sft_update_fn(optimizer: optax.GradientTransformation):
    """update(trainable, opt_state, grads) -> (new trainable, new opt_state): the optimizer
    part of one SFT step, element-wise over the trainable parameters (opt_state packed,
    `pack_state`). Any pytree of arrays works, so its cost can be measured on slices of the
    parameters (experiments/bench_iteration.py, method sft_update)."""

    def update(trainable, opt_state, grads):
        updates, opt_state = optimizer.update(grads, unpack_state(opt_state), trainable)
        return optax.apply_updates(trainable, updates), pack_state(opt_state)

    return update


def sft_step_fn(
    config: ModelConfig, label_word_ids: Sequence[int], optimizer: optax.GradientTransformation,
    loss_scale: float = DEFAULT_LOSS_SCALE,
):
    """step(params, opt_state, embeds, mask, mask_onehot, labels_onehot)
    -> (new params, new opt_state, loss before the step): one SFT step on one batch,
    `sft_grad_fn` then `sft_update_fn` in one program.

    The gradient is that of loss_scale x loss (mixed-precision-style loss scaling: the
    backward's values stay far above the fixed-point resolution); pair it with
    fixed_point_adam(..., loss_scale=the same value), or any optimizer that expects it.

    params: the full model params (embedding tables passed through unchanged); opt_state from
    `sft_init` (packed: `pack_state`). No soft prompt (P = 1 candidate of length 0).
    """
    grad, update = sft_grad_fn(config, label_word_ids, loss_scale), sft_update_fn(optimizer)

    def step(params, opt_state, embeds, mask, mask_onehot, labels_onehot):
        trainable, frozen = split_params(params)
        grads, value = grad(params, embeds, mask, mask_onehot, labels_onehot)
        new, opt_state = update(trainable, opt_state, grads)
        return {**new, **frozen}, opt_state, value

    return step


def prompt_step_fn(
    config: ModelConfig, label_word_ids: Sequence[int], optimizer: optax.GradientTransformation,
    loss_scale: float = DEFAULT_LOSS_SCALE, prompt_mode: str = "cat_pre_ln",
):
    """step(params, prompt, opt_state, embeds, mask, mask_onehot, labels_onehot)
    -> (new prompt, new opt_state, loss before the step): one gradient prompt-tuning step.

    prompt (L, H) soft prompt, the only trained value (opt_state = optimizer.init(prompt));
    the model's params are frozen; opt_state from `prompt_init`. loss_scale: as in
    `sft_step_fn`. The gradient flows back through every layer to the prompt.
    """
    loss = _loss_fn(config, label_word_ids, prompt_mode)

    def step(params, prompt, opt_state, embeds, mask, mask_onehot, labels_onehot):
        def of_prompt(p):
            return loss_scale * loss(params, p[None], embeds, mask, mask_onehot, labels_onehot)

        value, grad = jax.value_and_grad(of_prompt)(prompt)
        value = value / loss_scale
        updates, opt_state = optimizer.update(grad, unpack_state(opt_state), prompt)
        return optax.apply_updates(prompt, updates), pack_state(opt_state), value

    return step
