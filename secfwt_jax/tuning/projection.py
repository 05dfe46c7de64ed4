"""Black-Box Tuning's parametrisation: a low-dimensional z mapped to a soft prompt.

Sun et al., "Black-Box Tuning for Language-Model-as-a-Service", ICML 2022 (BBT), and
"BBTv2", EMNLP 2022: a soft prompt of ``L`` tokens of width ``H`` is ``p = A z + p0`` with
z in R^d (d = 500 by default) found by CMA-ES, and A (here ``(d, L*H)``, used as ``z @ A``)
a fixed random projection:

- ``normal``: A_ij ~ N(0, sigma_A^2) with ``sigma_A = embed_std / (sqrt(d) * sigma0)``, as in
  the BBT code (github.com/txsun1997/Black-Box-Tuning, deepbbt.py:
  ``std = alpha * std_hat / (np.sqrt(intrinsic_dim) * sigma)``, ``std_hat`` the standard
  deviation of all word-embedding entries, ``sigma`` the CMA-ES initial step size, alpha = 1).
  Then for z ~ N(0, sigma0^2 I) each prompt entry has std ``embed_std``: the prompts CMA-ES
  samples first look, in scale, like word embeddings.
- ``uniform``: A_ij ~ U(-1/sqrt(d), 1/sqrt(d)), BBT's default (bbt.py, ``random_proj='he'``
  leaves ``torch.nn.Linear(d, L*H, bias=False)`` at torch's default init, kaiming_uniform with
  a = sqrt(5), whose bound is 1/sqrt(fan_in) = 1/sqrt(d)).
- ``uniform_pm1`` (ours, earlier): A_ij ~ U(-1, 1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from secfwt_jax.tuning.base import HIGHEST

PROJECTIONS = ("normal", "uniform", "uniform_pm1")


def embedding_std(word_embeddings) -> float:
    """BBT's ``std_hat``: the (population) std of all entries of the word-embedding matrix."""
    return float(np.std(np.asarray(word_embeddings, dtype=np.float64)))


def projection_std(d: int, embed_std: float = 1.0, sigma0: float = 1.0) -> float:
    """Std of the entries of a ``normal`` projection: ``embed_std / (sqrt(d) * sigma0)``."""
    return embed_std / (math.sqrt(d) * sigma0)


def make_projection(
    key: jax.Array,
    d: int,
    prompt_len: int,
    hidden: int,
    kind: str = "normal",
    embed_std: float | None = None,
    sigma0: float = 1.0,
) -> jax.Array:
    """Random projection ``A (d, prompt_len * hidden)`` float32 (see the module docstring).

    kind ``normal``: std ``embed_std / (sqrt(d) * sigma0)``; ``embed_std=None`` means 1.0
    (a unit-scale embedding; pass :func:`embedding_std` of the model's word embeddings for
    BBT's setting). kind ``uniform``: U(-1/sqrt(d), 1/sqrt(d)); ``uniform_pm1``: U(-1, 1);
    for both ``embed_std`` and ``sigma0`` do not apply and passing ``embed_std`` is an error.
    """
    if kind not in PROJECTIONS:
        raise ValueError(f"unknown projection kind {kind!r}; accepted: {', '.join(PROJECTIONS)}")
    for name, value in (("d", d), ("prompt_len", prompt_len), ("hidden", hidden)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    shape = (d, prompt_len * hidden)
    if kind in ("uniform", "uniform_pm1"):
        if embed_std is not None:
            raise ValueError(
                f"embed_std={embed_std} applies to kind='normal' only; {kind} has a fixed bound"
            )
        bound = 1.0 / math.sqrt(d) if kind == "uniform" else 1.0
        return jax.random.uniform(key, shape, jnp.float32, minval=-bound, maxval=bound)
    if not sigma0 > 0:
        raise ValueError(f"sigma0 must be > 0, got {sigma0}")
    std = projection_std(d, 1.0 if embed_std is None else embed_std, sigma0)
    return std * jax.random.normal(key, shape, jnp.float32)


def prompts_from_z(
    z: jax.Array, A: jax.Array, p0: jax.Array | None = None, prompt_len: int | None = None
) -> jax.Array:
    """Soft prompts ``z @ A (+ p0)``: ``z (P, d)`` -> ``(P, L, H)``; ``z (d,)`` -> ``(L, H)``.

    ``A (d, L*H)``; ``p0 (L, H)`` an optional initial prompt added to every candidate. The
    prompt length ``L`` comes from ``p0`` or ``prompt_len`` (at least one is needed; both
    must agree). Full float32 matmul precision on every backend.
    """
    if A.ndim != 2:
        raise ValueError(f"A must have shape (d, L*H), got {A.shape}")
    if z.ndim not in (1, 2) or z.shape[-1] != A.shape[0]:
        raise ValueError(f"z must have shape (P, {A.shape[0]}) or ({A.shape[0]},), got {z.shape}")
    if p0 is not None:
        if p0.ndim != 2:
            raise ValueError(f"p0 must have shape (L, H), got {p0.shape}")
        if prompt_len is not None and prompt_len != p0.shape[0]:
            raise ValueError(f"prompt_len={prompt_len} disagrees with p0 of shape {p0.shape}")
        prompt_len = p0.shape[0]
    if prompt_len is None:
        raise ValueError("prompts_from_z needs p0 or prompt_len to know the prompt length L")
    if prompt_len < 1 or A.shape[1] % prompt_len:
        raise ValueError(f"A's width {A.shape[1]} is not prompt_len={prompt_len} times a hidden")
    hidden = A.shape[1] // prompt_len
    if p0 is not None and p0.shape[1] != hidden:
        raise ValueError(f"p0 has shape {p0.shape}; A gives prompts of ({prompt_len}, {hidden})")
    prompts = jnp.matmul(z, A, precision=HIGHEST)
    prompts = prompts.reshape(*z.shape[:-1], prompt_len, hidden)
    if p0 is not None:
        prompts = prompts + p0
    return prompts
