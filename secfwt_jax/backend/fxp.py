"""Fixed-point emulation of SPU's ring arithmetic in plaintext JAX (`protocol=plaintext_fxp`).

`fxp_transform(fn)` returns a function that evaluates `fn`'s jaxpr the way SPU 0.9.5 evaluates
the compiled program on secret inputs, but in plaintext floats on any JAX device:

- every floating input and every public float constant that meets a secret value is encoded as
  SPU encodes it: `trunc(x * 2^f) / 2^f` (C++ cast, i.e. toward zero), NaN -> 0, saturated at
  +-2^(k-2-f) (libspu/core/encoding.cc, `encodeToRing`);
- every product of two fixed-point values (mul, square, integer_pow, dot_general, conv) is
  truncated back to f fraction bits once, after the exact ring product or sum of products
  (hal/fxp_base.cc `f_mul`, `f_mmul`, `f_tensordot`); REF2K's truncation rounds half up
  (measured: it equals floor(v * 2^f + 1/2) on every one of 4000 random products), which is
  also the mean of ABY3's and SEMI2K's probabilistic truncation (exact in 74%, +-1 ulp else);
- exp, log, reciprocal/division, rsqrt, sqrt, tanh, logistic, sin, cos, erf, erfc and exp2 are
  replaced by SPU's own approximations, step by step with the same truncations
  (hal/fxp_approx.cc, hal/fxp_base.cc at the 0.9.5 release, default RuntimeConfig: Taylor exp
  with 8 squarings, 2 Goldschmidt iterations, minimax log, Chebyshev tanh/sin/cos);
- what XLA rewrites before SPU sees the program is rewritten here too: division by a constant
  becomes a product with its (encoded) reciprocal, `1 / x` becomes SPU's reciprocal, `x / sqrt(y)`
  becomes `x * rsqrt(y)`, logistic becomes `1 / (1 + exp(-x))`, erfc becomes XLA's rational
  approximation (ErfcImpl32) in fixed-point ops;
- a product whose exact value leaves the ring's range (|v| >= 2^(k-1-2f), 2^27 for FM64 with
  f=18) wraps around as the ring does (`overflow="wrap"`), or becomes NaN (`overflow="nan"`),
  and can be counted (`report_overflow=True`).

Everything else on floats (add, sub, max, select, comparisons, reductions by sum or max, shape
ops, gathers) is exact in the ring and is evaluated as-is. A floating-point primitive with no
rule raises NotImplementedError; nothing falls back to float silently. See docs/fxp.md for what
is not emulated (probabilistic truncation noise, MSB errors, float32 rounding of values above
2^(24-f)).

Values are carried in float32 (or float64 with `dtype="float64"` and jax_enable_x64): exact on
the 2^-f grid for |x| < 2^(24-f) (64 for f=18). No spu import here: this runs on jax 0.4.34
and jax 0.11 alike.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .plaintext import PlaintextBackend

try:  # jax >= 0.4.33 exports the jaxpr types here; older versions only in jax.core.
    from jax.extend.core import Literal as _Literal
except ImportError:  # pragma: no cover - old jax
    from jax.core import Literal as _Literal

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

    # -- exp, log (fxp_approx.cc) -------------------------------------------------------------

    def exp(self, x):
        """f_exp: EXP_TAYLOR (default) (1 + x / 2^n)^(2^n), or EXP_PADE via exp2."""
        if self.cfg.exp_mode == "pade":
            limit = 32.0 / math.log2(math.e)
            x = jnp.clip(x, self.const(-limit), self.const(limit))
            return self.exp2(self.mul(x, self.const(float(np.float32(math.log2(math.e))))))
        n = self.cfg.exp_iters
        res = self.round_grid(x, bits=n) + self.const(1.0)
        for _ in range(n):
            res = self.mul(res, res)
        return res

    def exp2(self, x):
        """exp2_pade: 2^frac(x) by a Pade-fitted polynomial, times 2^(int bits of x mod 32);
        x < 0 via 2^(x + 32) / 2^32. Valid for |x| < 32."""
        fl = jnp.floor(x)
        frac = x - fl
        x2 = self.mul(frac, frac)
        x3 = self.mul(frac, x2)
        x4 = self.mul(frac, x3)
        x5 = self.mul(frac, x4)
        p = [np.float32(0.100000007744302) * 10, np.float32(0.693147180426163),
             np.float32(0.240226510710170), np.float32(0.555040686204663) / 10,
             np.float32(0.961834122588046) / 100, np.float32(0.133273035928143) / 100]
        terms = [(self.const(float(c)), t) for c, t in zip(p[1:], (frac, x2, x3, x4, x5))]
        ret = self.trunc_product(*self._sum_products(terms)) + self.const(float(p[0]))
        bits = jnp.mod(fl, 32.0)
        for idx in range(5):
            bit = jnp.mod(jnp.floor(bits / 2.0**idx), 2.0)
            ret = jnp.where(bit > 0, self.mul_int(ret, 2.0 ** (2**idx)), ret)
        return jnp.where(x < 0, self.round_grid(ret, bits=32), ret)

    def log(self, x):
        """log_minmax (RuntimeConfig LOG_DEFAULT -> LOG_MINMAX): x = n * 2^(m-f), n in [1, 2);
        log(x) = P(n - 1) + (m - f) log 2 with an 8th-order minimax P (A&S 4.1.44)."""
        m = self._msb(x)
        f = self.f
        ok = (m >= 0) & (m <= 2 * f)
        factor = jnp.where(ok, self._pow2(jnp.where(ok, f - m, 0.0)), 0.0)
        norm = self.mul(x, factor)
        coeffs = [0.0, 0.9999964239, -0.4998741238, 0.3317990258, -0.2407338084,
                  0.1676540711, -0.0953293897, 0.0360884937, -0.0064535442]
        coeffs = [float(np.float32(c)) for c in coeffs]
        log_norm = self.polynomial(norm - self.const(1.0), coeffs)
        # k = popcount(prefix_or(X)) over 2f+2 bits: m+1, capped; all 2f+2 for negative X.
        k = jnp.where(x * self.scale >= 1.0, jnp.minimum(m + 1, 2 * f + 2), 0.0)
        k = jnp.where(x < 0, 2.0 * f + 2, k)
        log_e = self.mul(k - (f + 1), self.const(math.log(2.0)))
        return log_norm + log_e

    # -- square roots (fxp_approx.cc, after Lu et al. 2020, doi:10.1145/3411501.3419427) ------

    def rsqrt(self, x):
        """f_rsqrt: x = u * 2^(e+1) with u in [0.25, 0.5); rsqrt(u) by a quartic, times the
        compensation 2^(-(e+1)/2) built from bit tricks (sqrt(2) truncated to an integer)."""
        f = self.f
        m = self._msb(x)  # z = 2^(m+1) = 2^(e+f)
        ok = (m >= 0) & (m + 1 < 2 * f)
        z_rev = jnp.where(ok, self._pow2(jnp.where(ok, f - 2 - m, 0.0)), 0.0)
        u = self.mul(x, z_rev)
        coeffs = [0.0, -15.47994394, 38.4714796, -49.86605845, 26.02942339]
        r = self.polynomial(u, [float(np.float32(c)) for c in coeffs])
        r = r + self.const(float(np.float32(4.14285016)))
        p = jnp.floor((m + 1) / 2)
        even = jnp.mod(m + 1, 2.0) == 0
        half = f // 2
        if f % 2 == 1:
            c0, c1 = 2 ** ((f + 3) // 2), math.floor(2 ** (half + 1) * math.sqrt(2))
        else:
            c0, c1 = math.floor(2**half * math.sqrt(2)), 2**half
        nbits = half * 2
        ok_a = (m >= 0) & (p < nbits)
        a_rev = jnp.where(ok_a, self._pow2(jnp.where(ok_a, nbits - 1 - p, 0.0)), 0.0)
        comp = jnp.where(even, float(c0), float(c1)) * a_rev / self.scale
        return self.mul(r, comp)

    def sqrt(self, x):
        """f_sqrt: one Goldschmidt step from y0 = rsqrt(x): g = x y0, h = y0 / 2,
        r = 1.5 - g h, g <- g r."""
        y0 = self.rsqrt(x)
        g = self.mul(x, y0)
        h = self.mul(y0, self.const(0.5))
        r = self.const(1.5) - self.mul(g, h)
        return self.mul(g, r)

    # -- tanh, sin, cos: Chebyshev series (fxp_approx.cc, after CrypTen) ----------------------

    def _chebyshev_odd(self, x, terms: int):
        """compute_chebyshev_polynomials: T_1, T_3, ..., T_(2 terms - 1) of x, stacked first."""
        y = 4.0 * self.mul(x, x) - self.const(2.0)
        z = y - self.const(1.0)
        poly = [x, self.mul(x, z)]
        for i in range(2, terms):
            poly.append(self.mul(y, poly[i - 1]) - poly[i - 2])
        return poly

    def _chebyshev_sum(self, x, coeffs):
        poly = self._chebyshev_odd(x, len(coeffs))
        terms = [(self.const(float(np.float32(c))), t) for c, t in zip(coeffs, poly)]
        # f_mmul of (1, n) coefficients by (n, N) polynomials: one truncation of the sum.
        return self.trunc_product(*self._sum_products(terms))

    def tanh(self, x):
        """tanh_chebyshev: degree-17 odd Chebyshev series of tanh(5 t) on t = x / 5 in [-1, 1]."""
        coeffs = [1.2514045938932097, -0.3655987797163166, 0.17253141478140663,
                  -0.08943445792774211, 0.047703017901250824, -0.025830290571688078,
                  0.014338801903468182, -0.008541730970059077, 0.0061230685785789475]
        t = jnp.clip(x, self.const(-5.0), self.const(5.0))
        t = self.mul(self.const(float(np.float32(0.2))), t)
        return self._chebyshev_sum(t, coeffs)

    def sin(self, x):
        """sin_chebyshev: reduce to [-pi, pi) with a floor, then a degree-9 odd Chebyshev series
        of sin(1.25 pi t) on t = x / (1.25 pi)."""
        coeffs = [-0.07570787578233389, -0.8532364056408055, 0.2474789050491474,
                  -0.02719844932262742, 0.0016750058127101841]
        n = self.mul(x + self.const(math.pi), self.const(1 / (2 * math.pi)))
        n = self.mul(jnp.floor(n), self.const(2 * math.pi))
        t = self.mul(self.const(float(np.float32(0.25464790894703254))), x - n)
        return self._chebyshev_sum(t, coeffs)

    def cos(self, x):
        """cos_chebyshev: sin(pi / 2 - x)."""
        return self.sin(self.const(math.pi / 2) - x)

    # -- erf, logistic ------------------------------------------------------------------------

    def erf(self, x):
        """f_erf (A&S 7.1.27): 1 - 1 / (1 + a1 x + ... + a4 x^4)^4 on |x|, 1 beyond |x| >= 3,
        sign restored."""
        ax = jnp.abs(x)
        coeffs = [float(np.float32(c)) for c in (1.0, 0.278393, 0.230389, 0.000972, 0.078108)]
        z = self.polynomial(ax, coeffs)
        z = self.mul(z, z)
        z = self.mul(z, z)
        e = self.const(1.0) - self.reciprocal_positive(z)
        e = jnp.where(ax < self.const(3.0), e, self.const(1.0))
        return jnp.where(x < 0, -e, e)

    def logistic(self, x):
        """XLA's expansion of logistic that SPU receives: 1 / (1 + exp(-x))."""
        return self.reciprocal(self.exp(-x) + self.const(1.0))

    def _horner(self, w, coeffs):
        acc = self.mul(w, self.const(coeffs[0])) + self.const(coeffs[1])
        for c in coeffs[2:]:
            acc = self.mul(acc, w) + self.const(c)
        return acc

    def erfc(self, x):
        """erfc as XLA decomposes it for f32 (chlo ErfcImpl32) and SPU then runs op by op:
        1 - x P(x^2) for |x| < 1; else exp(-x^2) / |x| * R(1 / x^2) with one of two rational
        fits (|x| < 2 or not), 0 on underflow, 2 - y for x < 0."""
        f32 = lambda c: float(np.float32(c))  # noqa: E731
        erf_p = [f32(c) for c in (7.85386146e-5, -8.0101937e-4, 0.00518832775, -0.0268538129,
                                  0.112835854, -0.37612626, 1.12837911)]
        small_p = [f32(c) for c in (0.0232682, -0.138703942, 0.368742466, -0.582473278,
                                    0.621000468, -0.494451523, 0.340488, -0.274112701,
                                    0.563825965)]
        large_p = [f32(c) for c in (-10.477664, 12.9772, -7.49551868, 2.92101908,
                                    -1.01526523, 0.42184633, -0.282076746, 0.564189494)]
        one = self.const(1.0)
        ax = jnp.abs(x)
        z2 = self.mul(x, x)
        erfc_small = one - self.mul(x, self._horner(z2, erf_p))
        nz2 = -z2
        y = self.mul(self.exp(nz2), self.reciprocal(ax))
        w = self.reciprocal(z2)
        rat = jnp.where(ax < self.const(2.0), self._horner(w, small_p), self._horner(w, large_p))
        y = self.mul(y, rat)
        y = jnp.where(nz2 < self.const(f32(-88.7228394)), 0.0, y)
        y = jnp.where(x < 0, self.const(2.0) - y, y)
        return jnp.where(ax < one, erfc_small, y)

    def integer_pow(self, x, y: int):
        """x^y as jax lowers integer_pow (square-and-multiply), each product truncated;
        y < 0 takes SPU's reciprocal of x^|y|."""
        if y == 0:
            return jnp.ones_like(x)
        n, acc, base = abs(y), None, x
        while n > 0:
            if n & 1:
                acc = base if acc is None else self.mul(acc, base)
            n >>= 1
            if n > 0:
                base = self.mul(base, base)
        return self.reciprocal(acc) if y < 0 else acc


# ---------------------------------------------------------------------------------------------
# The jaxpr interpreter.

# Exact in the ring (or structural): evaluated as-is on the grid values.
EXACT_PRIMITIVES = frozenset({
    "add", "add_any", "sub", "neg", "max", "min", "abs", "sign", "floor", "ceil", "round",
    "select_n", "clamp", "eq", "ne", "lt", "le", "gt", "ge", "is_finite", "and", "or", "not",
    "xor", "reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin", "cumsum", "cummax",
    "cummin", "sort", "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose",
    "slice", "dynamic_slice", "dynamic_update_slice", "gather", "scatter", "scatter-add",
    "scatter_add", "concatenate", "pad", "rev", "split", "iota", "copy", "copy_p", "device_put",
    "stop_gradient", "optimization_barrier", "sharding_constraint", "mesh_cast", "reshard",
    "pvary", "reduce_precision", "select_and_gather_add", "reduce_and", "reduce_or",
})

# Call-like primitives whose body is evaluated by the interpreter (parameter holding the body).
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
CALL_PRIMITIVES = frozenset({
    "pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "checkpoint", "remat2", "custom_lin",
})

EMULATED_PRIMITIVES = (
    "mul", "square", "integer_pow", "dot_general", "conv_general_dilated", "div", "exp", "exp2",
    "log", "log1p", "rsqrt", "sqrt", "tanh", "logistic", "sin", "cos", "erf", "erfc",
    "convert_element_type", "cond", "while", "scan",
)


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.floating)


class _Value:
    """A value in the interpreter: the array, whether it depends on a secret input, and its
    concrete numpy value when it is a small public constant (for XLA-like rewrites)."""

    __slots__ = ("array", "secret", "known", "producer")

    def __init__(self, array, secret: bool, known=None, producer=None):
        self.array, self.secret, self.known, self.producer = array, secret, known, producer


_KNOWN_MAX_ELEMENTS = 4096


def _known(x):
    """x as a numpy array when it is a small compile-time constant, else None."""
    if getattr(x, "size", 1) > _KNOWN_MAX_ELEMENTS:
        return None
    try:
        return np.asarray(x)
    except Exception:  # a tracer: not a compile-time constant
        return None


class _Interpreter:
    def __init__(self, arith: FxpArith):
        self.ar = arith
        self.dtype = arith.dtype

    # -- environment helpers ---------------------------------------------------------------

    def _float_in(self, v: _Value, aval):
        """The array of an input as it enters a secret op: public floats get encoded."""
        a = v.array
        if _is_float(aval):
            a = jnp.asarray(a, self.dtype)
            if not v.secret:
                a = self.ar.encode(a)
        return a

    def run(self, jaxpr, consts, args: list[_Value]) -> list[_Value]:
        env: dict = {}

        def read(var) -> _Value:
            if isinstance(var, _Literal):
                return _Value(var.val, False, _known(var.val))
            return env[var]

        for var, c in zip(jaxpr.constvars, consts):
            env[var] = _Value(c, False, _known(c))
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eval_eqn(eqn, ins)
            for var, o in zip(eqn.outvars, outs):
                env[var] = o
        return [read(v) for v in jaxpr.outvars]

    # -- one equation ------------------------------------------------------------------------

    def eval_eqn(self, eqn, ins: list[_Value]) -> list[_Value]:
        name = eqn.primitive.name
        if name in CALL_PRIMITIVES:
            return self._call(eqn, ins)
        if name in ("cond", "while", "scan"):
            return getattr(self, "_" + name)(eqn, ins)
        secret = any(v.secret for v in ins)
        in_avals = [v.aval for v in eqn.invars]
        out_avals = [v.aval for v in eqn.outvars]
        floats = any(_is_float(a) for a in in_avals + out_avals)
        if not secret or not floats:
            return self._exact(eqn, ins, secret)
        rule = _RULES.get(name)
        if rule is not None:
            out = rule(self, eqn, ins, in_avals)
            return [_Value(out, True, producer=(name, ins))]
        if name in EXACT_PRIMITIVES:
            arrays = [self._float_in(v, a) for v, a in zip(ins, in_avals)]
            outs = eqn.primitive.bind(*arrays, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
            return [_Value(self._carry(o, a), True) for o, a in zip(outs, out_avals)]
        raise NotImplementedError(
            f"fxp emulation has no rule for primitive {name!r} on secret floating-point values; "
            f"emulated: {', '.join(EMULATED_PRIMITIVES)}; "
            f"exact: {', '.join(sorted(EXACT_PRIMITIVES))}"
        )

    def _carry(self, out, aval):
        return jnp.asarray(out, self.dtype) if _is_float(aval) else out

    def _exact(self, eqn, ins, secret: bool) -> list[_Value]:
        """Public computation (plaintext in SPU, folded by XLA) or non-float ops: exact."""
        arrays = [v.array for v in ins]
        if not secret and all(v.known is not None for v in ins):
            size = sum(int(np.prod(v.aval.shape)) for v in eqn.outvars)
            if size <= _KNOWN_MAX_ELEMENTS:
                with jax.ensure_compile_time_eval():
                    outs = eqn.primitive.bind(*[v.known for v in ins], **eqn.params)
                outs = outs if eqn.primitive.multiple_results else [outs]
                known = [_known(o) for o in outs]
                return [_Value(o, False, k) for o, k in zip(outs, known)]
        outs = eqn.primitive.bind(*arrays, **eqn.params)
        outs = outs if eqn.primitive.multiple_results else [outs]
        if secret:
            outs = [self._carry(o, v.aval) for o, v in zip(outs, eqn.outvars)]
        return [_Value(o, secret) for o in outs]

    # -- sub-jaxprs --------------------------------------------------------------------------

    def _call(self, eqn, ins):
        body = next((eqn.params[k] for k in _CALL_PARAMS if k in eqn.params), None)
        if body is None:
            raise NotImplementedError(
                f"call primitive {eqn.primitive.name!r} has none of the body parameters "
                f"{_CALL_PARAMS}; params: {sorted(eqn.params)}"
            )
        jaxpr, consts = (body.jaxpr, body.consts) if hasattr(body, "consts") else (body, [])
        return self.run(jaxpr, consts, ins)

    def _body_fn(self, closed, secret: bool):
        """A plain function of arrays evaluating a closed jaxpr under the emulation, with all
        its inputs marked secret (or all public)."""

        def f(*arrays):
            n0 = len(self.ar.overflows)
            outs = self.run(closed.jaxpr, closed.consts, [_Value(a, secret) for a in arrays])
            del self.ar.overflows[n0:]  # counts traced inside a loop body cannot leave it
            return [o.array for o in outs]

        return f

    def _cond(self, eqn, ins):
        index, ops = ins[0], ins[1:]
        branches = eqn.params["branches"]
        secret = any(v.secret for v in ins)
        if index.known is not None:  # a public, known branch index: SPU runs one branch
            i = int(np.clip(index.known, 0, len(branches) - 1))
            return self.run(branches[i].jaxpr, branches[i].consts, ops)
        arrays = [self._float_in(v, v_aval) if secret else v.array
                  for v, v_aval in zip(ops, [o.aval for o in eqn.invars[1:]])]
        fns = [self._body_fn(b, secret) for b in branches]
        outs = jax.lax.switch(index.array, fns, *arrays)
        return [_Value(o, secret) for o in outs]

    def _while(self, eqn, ins):
        p = eqn.params
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        secret = any(v.secret for v in ins)
        avals = [v.aval for v in eqn.invars]
        arr = [self._float_in(v, a) if secret else v.array for v, a in zip(ins, avals)]
        ca, ba, ia = arr[:nc], arr[nc:nc + nb], arr[nc + nb:]
        cond_f = self._body_fn(p["cond_jaxpr"], secret)
        body_f = self._body_fn(p["body_jaxpr"], secret)
        out = jax.lax.while_loop(
            lambda c: cond_f(*ca, *c)[0], lambda c: tuple(body_f(*ba, *c)), tuple(ia)
        )
        return [_Value(o, secret) for o in out]

    def _scan(self, eqn, ins):
        p = eqn.params
        n_consts, n_carry = p["num_consts"], p["num_carry"]
        secret = any(v.secret for v in ins)
        avals = [v.aval for v in eqn.invars]
        arr = [self._float_in(v, a) if secret else v.array for v, a in zip(ins, avals)]
        split = n_consts + n_carry
        consts, init, xs = arr[:n_consts], arr[n_consts:split], arr[split:]
        body = self._body_fn(p["jaxpr"], secret)

        def step(carry, x):
            out = body(*consts, *carry, *x)
            return tuple(out[:n_carry]), tuple(out[n_carry:])

        carry, ys = jax.lax.scan(
            step, tuple(init), tuple(xs), length=p["length"], reverse=p["reverse"],
            unroll=p.get("unroll", 1),
        )
        return [_Value(o, secret) for o in (*carry, *ys)]


# -- rules for secret floating-point primitives -------------------------------------------------


def _ins(it: _Interpreter, ins, avals):
    return [it._float_in(v, a) for v, a in zip(ins, avals)]


def _rule_mul(it, eqn, ins, avals):
    a, b = _ins(it, ins, avals)
    return it.ar.mul(a, b)


def _rule_square(it, eqn, ins, avals):
    (a,) = _ins(it, ins, avals)
    return it.ar.mul(a, a)


def _rule_integer_pow(it, eqn, ins, avals):
    (a,) = _ins(it, ins, avals)
    return it.ar.integer_pow(a, int(eqn.params["y"]))


def _rule_dot_general(it, eqn, ins, avals):
    a, b = (jnp.asarray(x, it.dtype) for x in _ins(it, ins, avals))
    return it.ar.dot_general(a, b, eqn.params["dimension_numbers"])


def _rule_conv(it, eqn, ins, avals):
    a, b = (jnp.asarray(x, it.dtype) for x in _ins(it, ins, avals))
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    params = dict(eqn.params, precision=highest, preferred_element_type=it.dtype)
    return it.ar.trunc_product(eqn.primitive.bind(a, b, **params))


def _rule_div(it, eqn, ins, avals):
    num, den = ins
    a, b = _ins(it, ins, avals)
    if not _is_float(avals[1]):
        raise NotImplementedError(f"division of a secret float by an integer ({avals[1]})")
    if not den.secret:
        # XLA's simplifier: A / C -> A * (1 / C), the reciprocal folded in float then encoded.
        inv = 1.0 / jnp.asarray(den.array, it.dtype)
        return it.ar.mul(a, it.ar.encode(inv))
    if den.producer is not None and den.producer[0] == "sqrt":
        # SPU's compiler (rewrite_div_sqrt): x / sqrt(y) -> x * rsqrt(y).
        (y,) = den.producer[1]
        return it.ar.mul(a, it.ar.rsqrt(it._float_in(y, avals[1])))
    if num.known is not None and not num.secret and np.all(num.known == 1):
        return jnp.broadcast_to(it.ar.reciprocal(b), jnp.broadcast_shapes(a.shape, b.shape))
    return it.ar.div(a, b)


def _unary(method: str):
    def rule(it, eqn, ins, avals):
        (a,) = _ins(it, ins, avals)
        return getattr(it.ar, method)(a)

    return rule


def _rule_exp2(it, eqn, ins, avals):
    """jax lowers exp2(x) to exp(log(2) * x) before SPU sees it (SPU's own Pade exp2 is
    FxpArith.exp2, used by exp_mode="pade")."""
    (a,) = _ins(it, ins, avals)
    return it.ar.exp(it.ar.mul(it.ar.const(float(np.float32(math.log(2.0)))), a))


def _rule_log1p(it, eqn, ins, avals):
    (a,) = _ins(it, ins, avals)
    return it.ar.log(a + it.ar.const(1.0))


def _rule_convert(it, eqn, ins, avals):
    (v,) = ins
    new = jnp.dtype(eqn.params["new_dtype"])
    if _is_float(avals[0]) and jnp.issubdtype(new, jnp.floating):
        return it._float_in(v, avals[0])  # every float is the same fixed-point type in SPU
    out = eqn.primitive.bind(it._float_in(v, avals[0]), **eqn.params)
    return it._carry(out, eqn.outvars[0].aval)


_RULES: dict[str, Callable] = {
    "mul": _rule_mul,
    "square": _rule_square,
    "integer_pow": _rule_integer_pow,
    "dot_general": _rule_dot_general,
    "conv_general_dilated": _rule_conv,
    "div": _rule_div,
    "exp": _unary("exp"),
    "exp2": _rule_exp2,
    "log": _unary("log"),
    "log1p": _rule_log1p,
    "rsqrt": _unary("rsqrt"),
    "sqrt": _unary("sqrt"),
    "tanh": _unary("tanh"),
    "logistic": _unary("logistic"),
    "sin": _unary("sin"),
    "cos": _unary("cos"),
    "erf": _unary("erf"),
    "erfc": _unary("erfc"),
    "convert_element_type": _rule_convert,
}


# ---------------------------------------------------------------------------------------------
# Public API


def fxp_transform(
    fn: Callable, fraction_bits: int = 18, field: str = "FM64", *,
    config: FxpConfig | None = None, report_overflow: bool = False, **options: Any,
) -> Callable:
    """`fn'` computing `fn` with SPU's fixed-point arithmetic emulated in plaintext JAX.

    fn: a function of array pytrees (all arguments are treated as SPU secrets, as
        spu.utils.simulation.sim_jax does). fraction_bits, field: SPU's fxp_fraction_bits and
        ring. config: a full FxpConfig instead (then fraction_bits/field must not differ);
        options: other FxpConfig fields (truncation, overflow, exp_mode, exp_iters, div_iters,
        dtype). report_overflow: fn' returns (outputs, n) with n (int32 scalar) the number of
        product elements that left the ring's range (counted outside lax control flow bodies).

    fn' has fn's signature and output pytree (float outputs in fn's dtypes) and is jittable:
    `jax.jit(fxp_transform(fn))`. The jaxpr is traced at each call (once per jit trace).
    """
    if config is None:
        config = FxpConfig(fraction_bits=fraction_bits, field=field, **options)
    elif options or (fraction_bits, field) not in (
        (18, "FM64"), (config.fraction_bits, config.field)
    ):
        raise ValueError(
            f"pass either config={config!r} or fraction_bits/field/options, not both "
            f"(got fraction_bits={fraction_bits}, field={field!r}, options={options})"
        )

    @functools.wraps(fn)
    def emulated(*args, **kwargs):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args, **kwargs)
        flat = jax.tree_util.tree_leaves((args, kwargs))
        arith = FxpArith(config)
        arith.count_overflows = report_overflow
        interp = _Interpreter(arith)
        inputs = []
        for x, var in zip(flat, closed.jaxpr.invars):
            a = jnp.asarray(x)
            if _is_float(var.aval):
                a = arith.encode(a)
            inputs.append(_Value(a, True))
        outs = interp.run(closed.jaxpr, closed.consts, inputs)
        out_avals = [v.aval for v in closed.jaxpr.outvars]
        arrays = [jnp.asarray(o.array, a.dtype) for o, a in zip(outs, out_avals)]
        result = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), arrays)
        if report_overflow:
            n = sum(arith.overflows) if arith.overflows else jnp.zeros((), jnp.int32)
            return result, jnp.asarray(n, jnp.int32)
        return result

    return emulated


def fxp_round(x, fraction_bits: int = 18, field: str = "FM64"):
    """SPU's encoding of plaintext floats, as a plain function: x on the 2^-f grid (toward 0)."""
    return FxpArith(FxpConfig(fraction_bits=fraction_bits, field=field)).encode(x)


class PlaintextFxpBackend(PlaintextBackend):
    """The plaintext backend with every compiled function run through `fxp_transform`
    (`protocol="plaintext_fxp"`): jax.jit speed on CPU/GPU, SPU's fixed-point numerics.

    Its name is not "plaintext", so PromptEvaluator takes the secure path (one-hot embedding
    lookups, handles kept in the backend), which is the program SPU runs.
    """

    name = "plaintext_fxp"

    def __init__(self, fraction_bits: int = 18, field: str = "FM64", **options):
        super().__init__()
        self.fxp_config = FxpConfig(fraction_bits=fraction_bits, field=field, **options)
        self.fraction_bits, self.field = fraction_bits, field

    def compile(self, f):
        return super().compile(fxp_transform(f, config=self.fxp_config))

    def __repr__(self):
        return f"PlaintextFxpBackend({self.fxp_config})"
