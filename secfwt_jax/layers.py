"""MPC-friendly layer variants, selected by name: attention kernels, activations, layer norm.

Every function here is plain JAX, so the same code runs in plaintext (jax.jit) and under SPU.
Shapes: q, k, v are (batch, heads, seq, head_dim); `mask` is (batch, seq) with 1 for real
tokens and 0 for padding. Random features are drawn with numpy from a seed, so a given
config is the same function on every machine and jax version (jax's PRNG bit streams changed
across versions; numpy's `default_rng` did not).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .config import ACTIVATIONS, ATTENTIONS, check_choice

# ---------------------------------------------------------------------------------------------
# Activations


# gelu_puma's coefficients (written out there as in PUMA's code): F0 on [-4, -1.95) (constant, x,
# x^2, x^3), F1 on [-1.95, 3] (constant, x, x^2, x^4, x^6)
PUMA_F0 = (-0.5054031199708174, -0.42226581151983866, -0.11807612951181953, -0.011034134030615728)
PUMA_F1 = (0.008526321541038084, 0.5, 0.3603292692789629, -0.037688200365904236,
           0.0018067462606141187)


def gelu_puma(x):
    """PUMA's piecewise-polynomial GeLU (Dong et al. 2023, "PUMA", Sec. 4.2, Eq. 3).

    0 for x < -4; a cubic on [-4, -1.95); a degree-6 even-plus-linear polynomial on
    [-1.95, 3]; x above 3. Max abs error against erf-GeLU is about 1e-2.
    """
    x2 = x * x
    f0 = -0.5054031199708174 - 0.42226581151983866 * x - 0.11807612951181953 * x2 - (
        0.011034134030615728 * x2 * x
    )
    x4 = x2 * x2
    f1 = (
        0.008526321541038084 + 0.5 * x + 0.3603292692789629 * x2
        - 0.037688200365904236 * x4 + 0.0018067462606141187 * x4 * x2
    )
    return jnp.where(x < -4.0, 0.0, jnp.where(x < -1.95, f0, jnp.where(x <= 3.0, f1, x)))


def gelu_puma_fused(x):
    """``gelu_puma`` with the same segments, polynomials and breakpoints, arranged for fewer
    bytes under MPC (a named deviation, ``activation=gelu_puma_fused``): each segment's
    polynomial is one product of its powers with the public coefficient vector, so a
    fixed-point backend truncates once per segment instead of once per term (2 instead of 7
    truncations per element), and the three comparisons are one call on the stacked
    thresholds (one comparison's rounds instead of three). Under ABY3 (FM64) 780 instead of 920
    bytes per element (``tests/test_layers.py``); equal to ``gelu_puma`` up to fixed-point
    rounding.
    """
    x2 = x * x
    x3 = x2 * x
    x4 = x2 * x2
    x6 = x4 * x2
    f0 = PUMA_F0[0] + jnp.stack([x, x2, x3], -1) @ jnp.asarray(PUMA_F0[1:], x.dtype)
    f1 = PUMA_F1[0] + jnp.stack([x, x2, x4, x6], -1) @ jnp.asarray(PUMA_F1[1:], x.dtype)
    thresholds = jnp.asarray([-4.0, -1.95, -3.0], x.dtype).reshape((3,) + (1,) * x.ndim)
    # one comparison call: x < -4, x < -1.95 and -x < -3 (x > 3, so x == 3 takes f1 as there)
    c = jnp.stack([x, x, -x]) < thresholds
    return jnp.where(c[0], 0.0, jnp.where(c[1], f0, jnp.where(c[2], x, f1)))


# gelu_even's interval and coefficients: minimax fit (max abs error over the real line, the
# tails 0 and x included) of x * erf(x / sqrt(2)) by c0 + c1 x^2 + c2 x^4 + c3 x^6 on [-A, A].
GELU_EVEN_A = 2.8182
GELU_EVEN_C = (0.01360719, 0.73113837, -0.07969989, 0.00404126)


def gelu_even(x):
    """A cheaper GeLU for MPC (a named option, ``activation=gelu_even``; not PUMA's function):
    GeLU(x) = x / 2 + x erf(x / sqrt(2)) / 2, and x erf(x / sqrt(2)) is even, so on [-A, A]
    it is 0.5 x + 0.5 p(x^2) with p of degree 3 in x^2; 0 below -A, x above A (A = 2.8182).
    Two comparisons (one call) and two selects instead of PUMA's three and three, the powers
    x^2, x^4, x^6 and one product with the coefficient vector: 528 instead of 780
    (``gelu_puma_fused``) or 920 (``gelu_puma``) bytes per element under ABY3 (FM64,
    ``tests/test_layers.py``). Max abs error against erf-GeLU 6.8e-3 in float (PUMA's: 2.0e-2).
    """
    x2 = x * x
    x4 = x2 * x2
    x6 = x4 * x2
    coef = jnp.asarray((0.5, *(0.5 * c for c in GELU_EVEN_C[1:])), x.dtype)
    inner = 0.5 * GELU_EVEN_C[0] + jnp.stack([x, x2, x4, x6], -1) @ coef
    # one comparison call: x < -A and -x < -A (x > A)
    c = jnp.stack([x, -x]) < -GELU_EVEN_A
    return jnp.where(c[0], 0.0, jnp.where(c[1], x, inner))


def quad(x):
    """MPCFormer's quadratic GeLU replacement 0.125 x^2 + 0.5 x + 0.25 (Li et al. 2023)."""
    return 0.125 * x * x + 0.5 * x + 0.25


def activation(name: str):
    """The activation function called `name` (one of config.ACTIVATIONS)."""
    check_choice("activation", name, ACTIVATIONS)
    return {
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_puma": gelu_puma,
        "gelu_puma_fused": gelu_puma_fused,
        "gelu_even": gelu_even,
        "quad": quad,
    }[name]


# ---------------------------------------------------------------------------------------------
# Layer norm: the one place where it is computed, so an MPC variant can be plugged in here.


def layer_norm(x, scale, bias, eps: float, kind: str = "exact"):
    """LayerNorm over the last axis with one inverse square root per row.

    x: (..., hidden); scale, bias: (hidden,). (x - mean) * rsqrt(var + eps) * scale + bias.
    """
    check_choice("layernorm", kind, ("exact",))
    mean = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = jnp.mean(xc * xc, axis=-1, keepdims=True)
    return xc * jax.lax.rsqrt(var + eps) * scale + bias


# ---------------------------------------------------------------------------------------------
# Random features


def random_features(num_features: int, dim: int, kind: str, seed: int) -> np.ndarray:
    """Projection rows w_1..w_M ~ N(0, I_dim), shape (num_features, dim), float32.

    kind="iid": independent Gaussian rows. kind="orthogonal": blocks of `dim` mutually
    orthogonal rows (QR of a Gaussian matrix) rescaled by chi(dim)-distributed norms, so each
    row is still marginally N(0, I) (Choromanski et al. 2021, "Performer", Sec. 4).
    """
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return rng.standard_normal((num_features, dim)).astype(np.float32)
    check_choice("feature_kind", kind, ("iid", "orthogonal"))
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        blocks.append(q.T)
    w = np.concatenate(blocks, axis=0)[:num_features]
    norms = np.linalg.norm(rng.standard_normal((num_features, dim)), axis=1, keepdims=True)
    return (w * norms).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Attention kernels. All take q, k, v (B, h, S, d) and mask (B, S); return (B, h, S, d).


def _scores(q, k):
    return jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])


def _minus_row_max(s, m):
    """s minus its row max over real keys, with padding entries set to 0 (weighted 0 later).

    The max is a constant shift of each row (no gradient needed through it); zeroing the
    padding entries keeps exp's argument in [-inf, 0] for real keys and at 0 for padding, so
    no large negative constant ever reaches exp (fixed-point exp would overflow on it).
    """
    row_max = jnp.max(s - (1.0 - m) * 1e4, axis=-1, keepdims=True)
    return (s - jax.lax.stop_gradient(row_max)) * m


def softmax_attention(q, k, v, mask):
    """Exact softmax attention; padding keys get weight exactly 0 (exp multiplied by the mask)."""
    m = mask[:, None, None, :].astype(q.dtype)
    s = _scores(q, k)
    s = _minus_row_max(s, m)
    e = jnp.exp(s) * m
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    return jnp.einsum("bhqk,bhkd->bhqd", p, v)


def exp_taylor(x, iterations: int = 6):
    """exp(x) ~ (1 + x / 2^n)^(2^n) with n squarings (PUMA's exp, accurate for x in [-14, 0])."""
    y = 1.0 + x / (2.0**iterations)
    for _ in range(iterations):
        y = y * y
    return y


def softmax_puma_attention(q, k, v, mask, clip: float = 14.0):
    """PUMA-style softmax (Dong et al. 2023, Sec. 4.1): subtract the row max, set entries below
    -clip to 0, Taylor exp, one reciprocal per row instead of a division per entry."""
    m = mask[:, None, None, :].astype(q.dtype)
    s = _scores(q, k)
    s = _minus_row_max(s, m)
    e = jnp.where(s < -clip, 0.0, exp_taylor(s)) * m
    r = 1.0 / jnp.sum(e, axis=-1, keepdims=True)
    return jnp.einsum("bhqk,bhkd->bhqd", e * r, v)


def two_quad_attention(q, k, v, mask, c: float = 5.0):
    """MPCFormer's 2Quad: softmax(s) replaced by (s + c)^2 / sum_k (s + c)^2 (Li et al. 2023)."""
    m = mask[:, None, None, :].astype(q.dtype)
    a = jnp.square(_scores(q, k) + c) * m
    r = 1.0 / jnp.sum(a, axis=-1, keepdims=True)
    return jnp.einsum("bhqk,bhkd->bhqd", a * r, v)


def _linear_attention(phi_q, phi_k, v, mask, k_factor=None):
    """sum_j phi_q(i).phi_k(j) v_j / sum_j phi_q(i).phi_k(j), linear in the sequence length.

    phi_q: (B, h, S, F), phi_k: (B, h, S, F) (padding rows zeroed here), v: (B, h, S, d).
    k_factor: None, or a per-key factor (B, h, S, 1) that phi_k is multiplied by; it is
    multiplied by the mask first, so phi_k takes one product of its size instead of two.
    """
    m = mask[:, None, :, None].astype(phi_k.dtype)
    phi_k = phi_k * (m if k_factor is None else k_factor * m)
    kv = jnp.einsum("bhsf,bhsd->bhfd", phi_k, v)
    z = jnp.sum(phi_k, axis=2)  # (B, h, F)
    num = jnp.einsum("bhsf,bhfd->bhsd", phi_q, kv)
    den = jnp.einsum("bhsf,bhf->bhs", phi_q, z)
    return num * (1.0 / den)[..., None]


def _project(x, w, scale: float = 1.0):
    """scale * x @ w.T: the projections of x (..., d) on the rows of w (M, d), shape (..., M).

    A concrete w is transposed (and scaled) in numpy, so the program holds a (d, M) constant.
    SPU 0.9.5 computes a dot_general of a rank >= 3 secret with a constant contracted on the
    constant's second axis as if the constant were not transposed (wrong values under ABY3 and
    SEMI2K; a rank-2 secret or a secret w is right), and XLA folds any in-program transpose of
    a constant w into exactly that form.
    """
    try:
        wt = (np.asarray(w, np.float64).T * scale).astype(np.float32)
    except jax.errors.TracerArrayConversionError:  # w is an input of the traced function
        return jnp.einsum("...d,md->...m", x, w * scale)
    return jnp.einsum("...d,dm->...m", x, wt)


def _scaled_qk(q, k, normalize: bool, lean: bool = False):
    """Queries and keys scaled by d^(-1/4), so q.k equals the softmax logit q.k / sqrt(d).

    With `normalize`, both are l2-normalised instead (the kernel becomes exp(cos(q, k))), which
    bounds |k|^2 / 2 by 1/2 and so keeps exp(|k|^2 / 2) within fixed-point range.
    Returns (q, k, |k|^2 of the returned k per key, shape (..., 1)). `lean` with `normalize`
    takes it from the normalisation's own sum (|k r|^2 = s r^2 for s = |k|^2,
    r = rsqrt(s + 1e-6)); otherwise it is summed from the returned k.
    """
    if normalize:
        q = q * jax.lax.rsqrt(jnp.sum(q * q, axis=-1, keepdims=True) + 1e-6)
        s = jnp.sum(k * k, axis=-1, keepdims=True)
        r = jax.lax.rsqrt(s + 1e-6)
        k = k * r
        if lean:
            return q, k, s * (r * r)
    else:
        scale = q.shape[-1] ** -0.25
        q, k = q * scale, k * scale
    return q, k, jnp.sum(k * k, axis=-1, keepdims=True)


def rfa_attention(q, k, v, mask, w, normalize: bool = False, cos_sin=None, lean: bool = False):
    """Random Feature Attention (Peng et al. 2021) with random Fourier features.

    exp(q.k) = exp(|q|^2/2) exp(|k|^2/2) exp(-|q-k|^2/2), and the Gaussian kernel is
    E_w[cos(w.q)cos(w.k) + sin(w.q)sin(w.k)] for w ~ N(0, I) (Rahimi & Recht 2007), so
    phi(x) = exp(|x|^2/2) [cos(Wx), sin(Wx)] / sqrt(M). The query factor exp(|q|^2/2) and the
    1/sqrt(M) cancel between numerator and denominator, so neither is computed.
    w: (M, head_dim).

    cos_sin: None computes cos/sin with the backend's built-in functions. Otherwise
    cos_sin(turns) -> (cos, sin) of the projections in turns (x / 2 pi), shape (2, B, h, S, M)
    (queries then keys, in one call): the model's ops hook (secfwt_jax.model_ops), e.g. the
    masked one-round trigonometry of secfwt_jax.secure_trig.

    lean (a named option, ModelConfig.rfa_lean; the same function, arranged for fewer secret
    products): the keys' factor exp(|k|^2/2) is multiplied by the padding mask per key before
    it scales the key features (one product of phi_k's size instead of two), and with
    `normalize` |k|^2 comes from the normalisation's sum (s r^2 per key) instead of a product
    of k's size. The default computes as written above (and as before this option).
    """
    q, k, k2 = _scaled_qk(q, k, normalize, lean)
    k_scale = jnp.exp(0.5 * k2)
    if cos_sin is None:
        wq, wk = _project(q, w), _project(k, w)
        phi_q = jnp.concatenate([jnp.cos(wq), jnp.sin(wq)], axis=-1)
        phi_k = jnp.concatenate([jnp.cos(wk), jnp.sin(wk)], axis=-1)
    else:
        # In turns (x / 2 pi): the 1 / (2 pi) is folded into the public projection.
        turns = _project(jnp.stack([q, k]), w, 1 / (2 * np.pi))
        cos, sin = cos_sin(turns)
        phi = jnp.concatenate([cos, sin], axis=-1)
        phi_q, phi_k = phi[0], phi[1]
    if lean:
        return _linear_attention(phi_q, phi_k, v, mask, k_factor=k_scale)
    return _linear_attention(phi_q, phi_k * k_scale, v, mask)


def favor_attention(q, k, v, mask, w, normalize: bool = False):
    """Performer's FAVOR+ positive random features (Choromanski et al. 2021, Lemma 1):
    exp(q.k) = E_w[exp(w.q - |q|^2/2) exp(w.k - |k|^2/2)]. The query factor exp(-|q|^2/2)
    cancels between numerator and denominator and is not computed. w: (M, head_dim)."""
    q, k, k2 = _scaled_qk(q, k, normalize)
    phi_q = jnp.exp(_project(q, w))
    phi_k = jnp.exp(_project(k, w) - 0.5 * k2)
    return _linear_attention(phi_q, phi_k, v, mask)


def attention(
    name: str, q, k, v, mask, *, w=None, normalize: bool = False, clip: float = 14.0,
    cos_sin=None, rfa_lean: bool = False,
):
    """Dispatch to the attention kernel called `name` (one of config.ATTENTIONS).

    cos_sin: rfa's trigonometry hook (see rfa_attention); only "rfa" takes it. rfa_lean:
    rfa_attention's `lean`; only "rfa" takes it.
    """
    check_choice("attention", name, ATTENTIONS)
    for given, what in ((cos_sin is not None, "cos_sin (e.g. masked trig)"),
                        (rfa_lean, "rfa_lean")):
        if given and name != "rfa":
            raise ValueError(f"{what} is used by attention 'rfa' only, not by {name!r}")
    if name == "rfa":
        return rfa_attention(q, k, v, mask, w, normalize, cos_sin, lean=rfa_lean)
    if name == "softmax":
        return softmax_attention(q, k, v, mask)
    if name == "softmax_puma":
        return softmax_puma_attention(q, k, v, mask, clip)
    if name == "2quad":
        return two_quad_attention(q, k, v, mask)
    return favor_attention(q, k, v, mask, w, normalize)
