"""SPU's approximations of non-linear functions on the fixed-point grid (libspu/kernel/hal/
fxp_approx.cc and the XLA expansions SPU receives), step by step with the same truncations.

`FxpApprox` adds exp, exp2, log, rsqrt, sqrt, tanh, sin, cos, erf, logistic, erfc and
integer_pow to FxpArith's ring arithmetic (fxp_arith.py). Defaults are SPU 0.9.5's
RuntimeConfig: Taylor exp with 8 squarings, minimax log, Chebyshev tanh/sin/cos.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .fxp_arith import FxpArith


class FxpApprox(FxpArith):
    """FxpArith with SPU's approximations of non-linear functions (all elementwise)."""

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
