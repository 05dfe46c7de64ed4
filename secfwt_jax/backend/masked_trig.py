"""The MPC side of the masked trigonometry (secfwt_jax.secure_trig): the model ops, opening
function and masks that fit a backend, decided from its capabilities (base.Capabilities).

No spu import here: the opening comes from the backend itself (SpuBackend.open_to_servers), so
the plaintext path runs without spu.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..model_ops import PLAIN_OPS, MaskedTrigOps
from ..secure_trig import (
    identity_trig_masks,
    make_trig_masks,
    max_mask_bits,
    model_trig_mask_shape,
)
from .base import Capabilities, protocol_capabilities


def _capabilities(target) -> Capabilities:
    """A backend's capabilities, or those of a protocol name (make_backend's defaults)."""
    if isinstance(target, str):
        return protocol_capabilities(target)
    return target.capabilities


def reveal_fn(target) -> Callable | None:
    """The function that opens a value to the compute servers inside a compiled program.

    target: a backend, or a protocol name (for scripts that build the function before the
    backend). A backend that can open values to the servers (capabilities.reveals holds
    "servers": the SPU protocols) gives its `open_to_servers()` (spu.experimental.reveal: the
    opened value becomes public to every server, the data owner never sees it). Others
    (plaintext, plaintext_fxp): None, the identity. Only the SPU backend module imports spu.
    """
    if not _capabilities(target).opens_to_servers:
        return None
    if isinstance(target, str):
        from .spu_backend import SpuBackend

        return SpuBackend.open_to_servers()
    return target.open_to_servers()


def check_masked_trig(backend) -> None:
    """Raise ValueError when `backend` cannot run the masked trigonometry: it needs either
    floating point (identity masks, no opening) or an in-program opening to the servers; a
    fixed-point backend without one (plaintext_fxp) would add 2^k masks it cannot open."""
    caps = backend.capabilities
    if caps.fixed_point and not caps.opens_to_servers:
        raise ValueError(
            f"backend {backend.name!r} computes in fixed point but cannot open values to the "
            "servers, which the masked trigonometry (rfa_trig='masked') needs; accepted: a "
            "floating-point backend (plaintext, identity masks) or an SPU protocol (aby3, "
            "semi2k, cheetah, ref2k); for fixed-point numerics use rfa_trig='builtin'"
        )


def model_ops(backend, config):
    """The model ops (secfwt_jax.model_ops) a model's program needs on `backend`: the masked-
    trig ops with the backend's opening for a model with rfa_trig="masked"
    (config.masked_trig; check_masked_trig), else PLAIN_OPS."""
    if not config.masked_trig:
        return PLAIN_OPS
    check_masked_trig(backend)
    return MaskedTrigOps(reveal_fn(backend))


def call_trig_masks(
    backend, config, n_sequences: int, seq_len: int,
    rng: np.random.Generator | int | None = None,
) -> tuple:
    """The per-call inputs of the model ops for one verbalizer call: () for a model without
    masked trig, else (fresh masks from model_trig_masks_for,)."""
    if not config.masked_trig:
        return ()
    return (model_trig_masks_for(backend, config, n_sequences, seq_len, rng=rng),)


def trig_masks_for(
    backend, shape: Sequence[int], mask_bits: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> dict[str, np.ndarray]:
    """Masks for `shape` opened elements that fit `backend` (one from make_backend).

    Fixed-point backends (capabilities.field_bits set): fresh masks on the backend's
    fraction-bit grid, with mask_bits k (default: the largest the ring allows,
    secure_trig.max_mask_bits), from os.urandom unless a (not secret, test-only) `rng` is
    given. Floating-point backends (plaintext): identity masks (a float32 run cannot add a 2^k
    mask exactly).
    """
    caps = backend.capabilities
    if not caps.fixed_point:
        return identity_trig_masks(shape)
    f, field_bits = caps.fraction_bits, caps.field_bits
    k = max_mask_bits(field_bits, f) if mask_bits is None else mask_bits
    return make_trig_masks(shape, f, k, rng, field_bits)


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
