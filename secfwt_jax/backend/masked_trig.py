"""The MPC side of the masked trigonometry (secfwt_jax.secure_trig): the opening function and
masks that fit a backend.

spu is imported only when an SPU protocol asks for it, so the plaintext path runs without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..secure_trig import (
    identity_trig_masks,
    make_trig_masks,
    max_mask_bits,
    model_trig_mask_shape,
)
from .common import FIELD_BITS, PROTOCOLS


def reveal_fn(protocol: str) -> Callable | None:
    """The function that opens a value to the compute servers inside a compiled program.

    SPU protocols: spu.experimental.reveal (a JAX primitive that lowers to SPU's "spu.reveal"
    custom call; the opened value becomes public to every server, the data owner never sees
    it). plaintext: None (identity).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; accepted: {', '.join(PROTOCOLS)}")
    if protocol == "plaintext":
        return None
    from spu.experimental import reveal

    return reveal


def model_reveal_fn(backend, config) -> Callable | None:
    """The opening function a model's program needs on `backend`: reveal_fn for a model with
    rfa_trig="masked" (config.masked_trig), else None."""
    return reveal_fn(backend.name) if config.masked_trig else None


def call_trig_masks(
    backend, config, n_sequences: int, seq_len: int,
    rng: np.random.Generator | int | None = None,
) -> tuple:
    """The extra arguments of one verbalizer call: () for a model without masked trig, else
    (fresh masks from model_trig_masks_for,)."""
    if not config.masked_trig:
        return ()
    return (model_trig_masks_for(backend, config, n_sequences, seq_len, rng=rng),)


def trig_masks_for(
    backend, shape: Sequence[int], mask_bits: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> dict[str, np.ndarray]:
    """Masks for `shape` opened elements that fit `backend` (one from make_backend).

    SPU backends: fresh masks on the backend's fraction-bit grid, with mask_bits k (default:
    the largest the ring allows, secure_trig.max_mask_bits), from os.urandom unless a (not
    secret, test-only) `rng` is given. plaintext: identity masks (a
    float32 run cannot add a 2^k mask exactly).
    """
    if backend.name == "plaintext":
        return identity_trig_masks(shape)
    field_bits = FIELD_BITS[backend.field]
    k = max_mask_bits(field_bits, backend.fraction_bits) if mask_bits is None else mask_bits
    return make_trig_masks(shape, backend.fraction_bits, k, rng, field_bits)


def model_trig_masks_for(
    backend, config, n_sequences: int, seq_len: int, mask_bits: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> list[dict[str, np.ndarray]]:
    """One call's masks for a model with rfa_trig="masked": a list with one mask pytree per
    layer for shape (2, n_sequences, heads, seq_len, num_features) (see trig_masks_for)."""
    if rng is not None:  # a seed: reproducible, not secret (tests only)
        rng = np.random.default_rng(rng)  # test-only; None: os.urandom
    shape = model_trig_mask_shape(config, n_sequences, seq_len)
    return [
        trig_masks_for(backend, shape, mask_bits, rng) for _ in range(config.num_hidden_layers)
    ]
