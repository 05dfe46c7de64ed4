"""One-round masked cosine and sine for MPC (SecFwT's secure trigonometry, in turns).

The protocol (docs/masked_trig.md has the threat model and the leakage bound). Angles are in
turns, x' = x / (2 pi), so that reducing "mod one period" is taking the fractional part, which
is exact in fixed point (no rounded 2 pi constant is involved).

- The dealer (the data owner) draws, for every opened element, a fresh mask t' uniform on the
  2^-f grid of [0, 2^k) (f: the fixed-point fraction bits of the MPC program, k: `mask_bits`)
  from the operating system's CSPRNG (os.urandom; never from the run seed, so masks differ
  between calls, across a resume and between runs) and hands the servers secret shares of
  t', cos(2 pi t') and sin(2 pi t'). It never sees the
  servers' opened values.
- The servers open delta = x' + t' to each other (one round), take d = delta - floor(delta) in
  plaintext, and compute
      cos 2 pi x' = cos(2 pi d) cos(2 pi t') + sin(2 pi d) sin(2 pi t')
      sin 2 pi x' = sin(2 pi d) cos(2 pi t') - cos(2 pi d) sin(2 pi t')
  (angle difference identities, x' = d - t' mod 1): public trigonometry, then public x secret
  products, i.e. one truncation.

Masks travel as float32 arrays, which the MPC encoder turns into fixed point exactly: t' * 2^f
is a uniform (k + f)-bit integer T, split into 24-bit limbs L_i (T = sum_i L_i 2^(24 i)); limb
i travels as the float32 L_i * 2^(24 i - f), which is exact (24-bit significand). The limbs add
up to t' exactly in the ring, never in float32: a plaintext (float32) run must use
`identity_trig_masks`, whose t' is 0.

Pure jax.numpy and numpy; no MPC library here. The function that opens a value to the servers
is passed in (`reveal`); the plaintext path passes none (identity). See
secfwt_jax.backend.masked_trig for the SPU one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

MASK_KEYS = ("t", "cos_t", "sin_t")
LIMB_BITS = 24  # float32 significand bits: a limb of this many bits travels exactly


def num_limbs(mask_bits: int, fraction_bits: int) -> int:
    """Number of float32 limbs that carry a mask of `mask_bits` integer bits and
    `fraction_bits` fraction bits exactly (at least 1)."""
    return max(1, math.ceil((mask_bits + fraction_bits) / LIMB_BITS))


def secret_uniform_bits(
    shape: Sequence[int], bits: int, rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """int64 array of `shape`, each element uniform on [0, 2^bits) (0 <= bits <= 62).

    rng None (the default, and the only choice the library makes): bytes from os.urandom, the
    operating system's cryptographically secure generator, independent of any seed. A
    numpy Generator or int seed gives reproducible values; they are NOT secret, for tests and
    numerical studies only.
    """
    shape = tuple(int(s) for s in shape)
    if not 0 <= bits <= 62:
        raise ValueError(f"bits must be in 0..62, got {bits}")
    if rng is not None:
        # a caller's seed or Generator: reproducible, NOT secret (tests and studies only)
        seeded = np.random.default_rng(rng)  # test-only
        return seeded.integers(0, 2**bits, size=shape, dtype=np.int64)
    n = math.prod(shape)
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64).reshape(shape)
    # the low `bits` bits of a uniform 64-bit word are uniform on [0, 2^bits): no modulo bias
    return (words & np.uint64(2**bits - 1)).astype(np.int64)


def max_mask_bits(field_bits: int = 64, fraction_bits: int = 18) -> int:
    """Largest k such that x' + t' stays inside the fixed-point range of the ring.

    A fixed-point value of a `field_bits` ring with f fraction bits must satisfy
    |v| < 2^(field_bits - 1 - f); keeping one bit of headroom for x' gives
    k = field_bits - f - 2 (44 for FM64 with f = 18).
    """
    k = field_bits - fraction_bits - 2
    if k < 1:
        raise ValueError(
            f"no room for a mask: field_bits {field_bits} with fraction_bits {fraction_bits}"
        )
    return k


def opened_value_distance_bound(max_abs_turns: float, mask_bits: int, n_opened: int = 1) -> float:
    """Statistical distance between the servers' view for any two secrets, union over openings.

    For one element, delta = x' + t' with t' uniform on the 2^-f grid of [0, 2^k) is uniform on
    [x', x' + 2^k); the distributions for x' and for 0 differ on |x'| 2^f of the 2^(k+f) grid
    points, so their distance is |x'| / 2^k <= B / 2^k (B = max_abs_turns). Independent masks
    per element: at most n_opened * B / 2^k for n_opened elements.
    """
    if max_abs_turns < 0 or n_opened < 0:
        raise ValueError(
            f"need max_abs_turns >= 0 and n_opened >= 0, got {max_abs_turns} and {n_opened}"
        )
    return float(n_opened) * float(max_abs_turns) / 2.0**mask_bits


def make_trig_masks(
    shape: Sequence[int], fraction_bits: int = 18, mask_bits: int = 44,
    rng: np.random.Generator | int | None = None, field_bits: int = 64,
) -> dict[str, np.ndarray]:
    """Fresh correlated randomness for `shape` opened elements, drawn by the data owner.

    rng: None (default) draws from os.urandom (see `secret_uniform_bits`); a seed or Generator
    makes the masks reproducible and therefore not secret (tests only).

    Returns {"t": (n_limbs, *shape) float32 limbs summing to t' (in the ring, exactly),
    "cos_t": shape float32 cos(2 pi t'), "sin_t": shape float32 sin(2 pi t')}. t' is uniform on
    the 2^-fraction_bits grid of [0, 2^mask_bits). `fraction_bits` must equal the MPC program's
    fixed-point fraction bits (a coarser mask grid would leave the low bits of x' unmasked, a
    finer one would be rounded away by the encoder). Masks are single-use: never open two
    values under the same mask.
    """
    if not 0 < fraction_bits < LIMB_BITS:
        raise ValueError(f"fraction_bits must be in 1..{LIMB_BITS - 1}, got {fraction_bits}")
    k_max = max_mask_bits(field_bits, fraction_bits)
    if not 0 <= mask_bits <= k_max:
        raise ValueError(
            f"mask_bits must be in 0..{k_max} for a {field_bits}-bit ring with fraction_bits "
            f"{fraction_bits}, got {mask_bits}"
        )
    if rng is not None:
        rng = np.random.default_rng(rng)  # test-only seed (not secret); None: os.urandom
    shape = tuple(int(s) for s in shape)
    total_bits = mask_bits + fraction_bits
    limbs = []
    for i in range(num_limbs(mask_bits, fraction_bits)):
        bits = min(LIMB_BITS, total_bits - LIMB_BITS * i)
        limb = secret_uniform_bits(shape, bits, rng)
        limbs.append(np.ldexp(limb.astype(np.float64), LIMB_BITS * i - fraction_bits))
        if i == 0:  # the lowest limb holds the fraction bits, all that cos/sin depend on
            frac = np.ldexp((limb % 2**fraction_bits).astype(np.float64), -fraction_bits)
    t = np.stack(limbs).astype(np.float32)
    if not np.array_equal(t.astype(np.float64), np.stack(limbs)):
        raise AssertionError("a mask limb is not exact in float32")  # cannot happen: 24 bits
    return {
        "t": t,
        "cos_t": np.cos(2 * np.pi * frac).astype(np.float32),
        "sin_t": np.sin(2 * np.pi * frac).astype(np.float32),
    }


def identity_trig_masks(shape: Sequence[int]) -> dict[str, np.ndarray]:
    """Masks with t' = 0 (no masking) for plaintext runs: same pytree structure and shapes as
    `make_trig_masks` with one limb."""
    shape = tuple(int(s) for s in shape)
    return {
        "t": np.zeros((1, *shape), np.float32),
        "cos_t": np.ones(shape, np.float32),
        "sin_t": np.zeros(shape, np.float32),
    }


def model_trig_mask_shape(config, n_sequences: int, seq_len: int) -> tuple[int, ...]:
    """Shape of one layer's masks for rfa with rfa_trig="masked": (2, N, heads, S, M).

    config: a ModelConfig; n_sequences N: sequences in the batch (P * B for verbalizer_fn);
    seq_len S: tokens per sequence as the encoder sees them (soft prompt included). The model
    takes a list of config.num_hidden_layers such mask pytrees, fresh for every call.
    """
    return (2, int(n_sequences), config.num_attention_heads, int(seq_len), config.num_features)


def check_trig_masks(masks, shape: Sequence[int]) -> None:
    """Raise ValueError naming the mismatch if `masks` is not a mask pytree for `shape`."""
    shape = tuple(shape)
    if not isinstance(masks, dict) or set(masks) != set(MASK_KEYS):
        keys = sorted(masks) if isinstance(masks, dict) else type(masks).__name__
        raise ValueError(f"trig masks must be a dict with keys {MASK_KEYS}, got {keys}")
    t_shape, c_shape, s_shape = (tuple(masks[k].shape) for k in MASK_KEYS)
    if t_shape[1:] != shape or c_shape != shape or s_shape != shape:
        raise ValueError(
            f"trig masks of shapes t {t_shape}, cos_t {c_shape}, sin_t {s_shape} do not fit "
            f"values of shape {shape}: expected t (n_limbs, *{shape}), cos_t and sin_t {shape}"
        )


def masked_cos_sin(turns, masks, reveal: Callable | None = None):
    """(cos 2 pi x', sin 2 pi x') of a secret x' (in turns) with one opening.

    turns: (...) the secret x / (2 pi). masks: a pytree from `make_trig_masks` (or
    `identity_trig_masks` in plaintext) for turns.shape. reveal: opens a value to the servers
    inside the MPC program (None: identity, the plaintext path). Returns two arrays of
    turns.shape. Cost under MPC: one opening of turns.size elements, public trigonometry, one
    public x secret multiplication of 4 * turns.size elements (one truncation round).
    """
    check_trig_masks(masks, turns.shape)
    masked = turns
    for limb in masks["t"]:  # in the ring: exact; in float32 only valid for identity masks
        masked = masked + limb
    delta = masked if reveal is None else reveal(masked)
    d = delta - jnp.floor(delta)  # public, exact in fixed point: d = x' + t' mod 1
    cd, sd = jnp.cos(2 * np.pi * d), jnp.sin(2 * np.pi * d)
    c, s = masks["cos_t"], masks["sin_t"]
    # one stacked public x secret product: one multiplication op, one truncation round
    p = jnp.stack([cd, sd, sd, -cd]) * jnp.stack([c, s, c, s])
    return p[0] + p[1], p[2] + p[3]
