"""SPU's fixed-point ring arithmetic on plaintext float arrays (libspu/kernel/hal/fxp_base.cc).

Values are floats on the 2^-f grid that stand for ring integers x * 2^f in Z_2^k: SPU's encoding
(core/encoding.cc), the truncation after a product, products and matmuls, SPU's polynomial
evaluation, and its Goldschmidt division and reciprocal. The approximations of exp, log, ...
(fxp_approx.cc) build on this in fxp_approx.py; fxp_interp.py runs a jaxpr with them
(`fxp_transform`). No spu import here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

FIELD_BITS = {"FM32": 32, "FM64": 64, "FM128": 128}
TRUNCATIONS = ("nearest", "floor")
OVERFLOWS = ("wrap", "nan", "ignore")
EXP_MODES = ("taylor", "pade")
DTYPES = ("float32", "float64")


def _check(kind: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"unknown {kind} {value!r}; accepted: {', '.join(map(str, accepted))}")


@dataclasses.dataclass(frozen=True)
class FxpConfig:
    """SPU fixed-point settings to emulate (defaults: SPU 0.9.5's RuntimeConfig for FM64).

    fraction_bits: f, the fixed-point scale 2^f (SPU's fxp_fraction_bits; 18 for FM64).
    field: ring Z_2^k, k = 32 / 64 / 128 bits; sets the overflow bounds.
    truncation: "nearest" (REF2K's exact rule; the mean of ABY3/SEMI2K's probabilistic one) or
        "floor" (a plain arithmetic shift).
    overflow: what a product outside the ring's range does: "wrap" (modular, as the ring),
        "nan" (poisoned, to find it), "ignore" (kept as the float value).
    exp_mode, exp_iters: RuntimeConfig.fxp_exp_mode (EXP_DEFAULT = Taylor) and fxp_exp_iters.
    div_iters: RuntimeConfig.fxp_div_goldschmidt_iters.
    dtype: the float type values are carried in (see the module docstring for its limits).
    exact_products: round elementwise products (and the short sums of products inside the
        approximations) from their exact value, via Dekker's error-free product, instead of
        from the float product; matmuls are always rounded from the float result.
    """

    fraction_bits: int = 18
    field: str = "FM64"
    truncation: str = "nearest"
    overflow: str = "wrap"
    exp_mode: str = "taylor"
    exp_iters: int = 8
    div_iters: int = 2
    dtype: str = "float32"
    exact_products: bool = True

    def __post_init__(self):
        _check("field", self.field, tuple(FIELD_BITS))
        _check("truncation", self.truncation, TRUNCATIONS)
        _check("overflow", self.overflow, OVERFLOWS)
        _check("exp_mode", self.exp_mode, EXP_MODES)
        _check("dtype", self.dtype, DTYPES)
        k = FIELD_BITS[self.field]
        if not 0 < self.fraction_bits < (k - 2) // 2:
            raise ValueError(
                f"fraction_bits {self.fraction_bits} does not fit field {self.field}: "
                f"accepted 1..{(k - 2) // 2 - 1}"
            )
        if self.exp_iters < 1 or self.div_iters < 1:
            raise ValueError(
                f"exp_iters {self.exp_iters} and div_iters {self.div_iters} must be >= 1"
            )

    @property
    def ring_bits(self) -> int:
        return FIELD_BITS[self.field]



# ---------------------------------------------------------------------------------------------
# Fixed-point arithmetic on float arrays that hold values of the 2^-f grid.


class FxpArith:
    """SPU's fixed-point kernels on plaintext arrays of grid values (all shapes elementwise).

    Each method cites the SPU 0.9.5 function it follows (libspu/kernel/hal/...). `overflows`
    collects, per truncating op, the number of elements whose exact product left the ring's
    range; `fxp_transform(report_overflow=True)` sums it.
    """

    def __init__(self, config: FxpConfig):
        self.cfg = config
        self.f = config.fraction_bits
        self.k = config.ring_bits
        self.scale = float(2.0**self.f)
        self.dtype = jnp.dtype(config.dtype)
        # Products are correct while |x * y| * 2^(2f) < 2^(k-1) (signed ring, one truncation).
        self.product_bound = float(2.0 ** (self.k - 1 - 2 * self.f))
        # Values (and integer-times-fixed-point products) while |x| * 2^f < 2^(k-1).
        self.value_bound = float(2.0 ** (self.k - 1 - self.f))
        self.encode_bound = float(2.0 ** (self.k - 2 - self.f))
        self.count_overflows = False
        self.overflows: list = []

    # -- encoding and truncation -----------------------------------------------------------

    def encode(self, x):
        """SPU's float -> ring encoding (core/encoding.cc): trunc toward zero, NaN -> 0,
        saturated at [-2^(k-2), 2^(k-2) - 1] / 2^f."""
        x = jnp.asarray(x, self.dtype)
        x = jnp.where(jnp.isnan(x), 0.0, x)
        lo, hi = -self.encode_bound, self.encode_bound - 1.0 / self.scale
        return jnp.clip(jnp.trunc(x * self.scale) / self.scale, lo, hi).astype(self.dtype)

    def const(self, c: float):
        """An encoded public constant (a Python float, encoded in float64 as SPU's double path)."""
        return jnp.asarray(math.trunc(float(c) * self.scale) / self.scale, self.dtype)

    def _wrap(self, v, bound: float):
        """Apply the overflow policy to exact values v whose valid range is |v| < bound."""
        if self.count_overflows:
            self.overflows.append(jnp.sum(jnp.abs(v) >= bound, dtype=jnp.int32))
        if self.cfg.overflow == "wrap":  # v mod 2 bound, into [-bound, bound): 0 shift inside
            period = 2.0 * bound
            return v - period * jnp.round(v * (1.0 / period))
        if self.cfg.overflow == "nan":
            return jnp.where(jnp.abs(v) >= bound, jnp.nan, v)
        return v

    def round_grid(self, v, bits: int = 0):
        """The ring's `_trunc` seen on real values: round(v * 2^f / 2^bits) / 2^f (half up, or
        floor). bits=0 after a product (v = x * y, ring integer v * 2^2f shifted by f);
        bits=n for SPU's `_trunc(x, n)` of a plain fixed-point value x (a division by 2^n)."""
        t = v * (self.scale / float(2.0**bits))
        t = jnp.floor(t + 0.5) if self.cfg.truncation == "nearest" else jnp.floor(t)
        return (t / self.scale).astype(self.dtype)

    def trunc_product(self, v, err=None):
        """The truncation after a ring product: overflow policy, then back to f bits.

        v: the product (or sum of products) in floats; err: its rounding error when known
        (from `_two_prod`), so that the rounding to the grid is that of the exact value."""
        v = self._wrap(v, self.product_bound)
        if err is None or self.cfg.overflow == "nan":
            return self.round_grid(v)
        # Round t + e (t = v 2^f, e = err 2^f, the exact value) in two steps: r0 from t, then
        # the small remainder (t - r0) + e, whose first term is exact.
        t = v * self.scale
        if self.cfg.truncation == "nearest":
            r0 = jnp.floor(t + 0.5)
            r = r0 + jnp.floor((t - r0) + err * self.scale + 0.5)
        else:
            r0 = jnp.floor(t)
            r = r0 + jnp.floor((t - r0) + err * self.scale)
        return (r / self.scale).astype(self.dtype)

    @staticmethod
    def _split(a):
        """Veltkamp's split of a float32/float64 into two halves whose products are exact."""
        c = 4097.0 if a.dtype == jnp.float32 else 134217729.0  # 2^12 + 1, 2^27 + 1
        t = c * a
        hi = t - (t - a)
        return hi, a - hi

    def _two_prod(self, a, b):
        """(p, err) with p = fl(a * b) and p + err = a * b exactly (Dekker 1971)."""
        p = a * b
        if not self.cfg.exact_products:
            return p, None
        a_hi, a_lo = self._split(jnp.broadcast_to(a, p.shape).astype(p.dtype))
        b_hi, b_lo = self._split(jnp.broadcast_to(b, p.shape).astype(p.dtype))
        err = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
        return p, err

    def _two_sum(self, s, p, err, e=None):
        """(s + p, err + e + the rounding error of s + p) by Knuth's TwoSum."""
        total = s + p
        if err is None:
            return total, None
        bb = total - s
        err = err + ((s - (total - bb)) + (p - bb))
        return total, err if e is None else err + e

    def _sum_products(self, terms):
        """Compensated sum of products [(a, b), ...] -> (s, err), s + err ~ the exact sum."""
        s, err = self._two_prod(*terms[0])
        for a, b in terms[1:]:
            p, e = self._two_prod(a, b)
            s, err = self._two_sum(s, p, err, e)
        return s, err

    def mul(self, a, b):
        """f_mul: truncated product of two fixed-point values."""
        a = jnp.asarray(a, self.dtype)
        b = jnp.asarray(b, self.dtype)
        return self.trunc_product(*self._two_prod(a, b))

    def mul_int(self, a, n):
        """_mul by a ring integer (no truncation): exact, only the value range applies."""
        return self._wrap(a * n, self.value_bound).astype(self.dtype)

    def dot_general(self, a, b, dimension_numbers):
        """f_mmul / f_tensordot: exact ring sum of products, then one truncation."""
        out = jax.lax.dot_general(
            a, b, dimension_numbers, precision=jax.lax.Precision.HIGHEST,
            preferred_element_type=self.dtype,
        )
        return self.trunc_product(out)

    def polynomial(self, x, coeffs: Sequence[float]):
        """detail::polynomial (fxp_base.cc): sum_i c_i x^i, each power x^i truncated, the sum of
        the (untruncated) products c_i x^i truncated once."""
        pows = {1: x}
        for i in range(2, len(coeffs)):
            # x^(2^j) by squaring, other powers as x^(2^j) x^(i - 2^j): bit-exact against
            # SPU 0.9.5 (the order decides which products get rounded).
            hi = 1 << (i.bit_length() - 1)  # the largest power of 2 <= i
            a, b = (hi, i - hi) if hi < i else (hi // 2, hi // 2)
            pows[i] = self.mul(pows[a], pows[b])
        terms = [(self.const(c), pows[i]) for i, c in enumerate(coeffs[1:], start=1)]
        s, err = self._sum_products(terms)
        if coeffs[0] != 0:  # the constant term, exact: c0 * 1.0 in the ring
            s, err = self._two_sum(s, self.const(coeffs[0]), err)
        return self.trunc_product(s, err)

    # -- bit tricks, in real numbers --------------------------------------------------------

    def _msb(self, x):
        """Position m of the highest set bit of the ring integer X = x * 2^f (X > 0), as a
        float array (the float exponent of X, read from its bits); -1 where X < 1."""
        big = x * self.scale
        if self.dtype == jnp.float32:
            bits = jax.lax.bitcast_convert_type(big, jnp.int32)
            e = jnp.right_shift(bits, 23) & 0xFF
            m = (e - 127).astype(self.dtype)
        else:
            bits = jax.lax.bitcast_convert_type(big, jnp.int64)
            e = jnp.right_shift(bits, 52) & 0x7FF
            m = (e - 1023).astype(self.dtype)
        return jnp.where(big >= 1.0, m, -1.0)

    def _pow2(self, e):
        """2.0 ** e for integer-valued float e in the normal range, built from its bits."""
        if self.dtype == jnp.float32:
            bits = jnp.left_shift((e + 127).astype(jnp.int32), 23)
            return jax.lax.bitcast_convert_type(bits, jnp.float32)
        bits = jnp.left_shift((e + 1023).astype(jnp.int64), 52)
        return jax.lax.bitcast_convert_type(bits, jnp.float64)

    def _norm_factor(self, x):
        """2^(f-1-m) as a fixed-point value (bitrev of the msb over 2f bits, fxp_base.cc), 0
        when X <= 0 or m >= 2f: x * factor lies in [0.5, 1)."""
        m = self._msb(x)
        ok = (m >= 0) & (m < 2 * self.f)
        return jnp.where(ok, self._pow2(jnp.where(ok, self.f - 1 - m, 0.0)), 0.0)

    # -- division and reciprocal (fxp_base.cc) --------------------------------------------------

    def _reciprocal_normalized(self, b_abs, factor):
        """reciprocal_goldschmidt_normalized_approx: c = b*2^-m in [0.5, 1), w = 2.9142 - 2c,
        then `div_iters` Goldschmidt steps r <- r(1 + e), e <- e^2."""
        c = self.mul(b_abs, factor)
        w = self.const(2.9142) - 2.0 * c
        one = self.const(1.0)
        r = w
        e = one - self.mul(c, w)
        iters = max(self.cfg.div_iters, 3) if self.f >= 30 else self.cfg.div_iters
        for i in range(iters):
            r = self.mul(r, e + one)
            if i + 1 < iters:
                e = self.mul(e, e)
        return r

    def div(self, a, b):
        """div_goldschmidt_general: a / b with b's sign taken out by a comparison."""
        neg = b < 0
        b_abs = jnp.where(neg, -b, b)
        factor = self._norm_factor(b_abs)
        r = self._reciprocal_normalized(b_abs, factor)
        r = self.mul(self.mul(r, a), factor)
        return jnp.where(neg, -r, r)

    def reciprocal(self, b):
        """reciprocal_goldschmidt: 1 / b, any sign."""
        neg = b < 0
        b_abs = jnp.where(neg, -b, b)
        r = self.reciprocal_positive(b_abs)
        return jnp.where(neg, -r, r)

    def reciprocal_positive(self, b_abs):
        """reciprocal_goldschmidt_positive: 1 / b for b > 0."""
        factor = self._norm_factor(b_abs)
        return self.mul(self._reciprocal_normalized(b_abs, factor), factor)
