"""Fixed-point emulation of SPU's ring arithmetic in plaintext JAX (`protocol=plaintext_fxp`).

Three modules do the work: fxp_arith.py (FxpConfig and the ring arithmetic of SPU's
fxp_base.cc), fxp_approx.py (its approximations of non-linear functions, fxp_approx.cc) and
fxp_interp.py (the jaxpr interpreter, `fxp_transform`). This module holds the backend and
re-exports their public names.

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

from .base import protocol_capabilities
from .fxp_approx import FxpApprox
from .fxp_arith import FIELD_BITS, FxpArith, FxpConfig
from .fxp_interp import EMULATED_PRIMITIVES, EXACT_PRIMITIVES, fxp_round, fxp_transform
from .plaintext import PlaintextBackend

__all__ = [
    "EMULATED_PRIMITIVES", "EXACT_PRIMITIVES", "FIELD_BITS", "FxpApprox", "FxpArith",
    "FxpConfig", "PlaintextFxpBackend", "fxp_round", "fxp_transform",
]


class PlaintextFxpBackend(PlaintextBackend):
    """The plaintext backend with every compiled function run through `fxp_transform`
    (`protocol="plaintext_fxp"`): jax.jit speed on CPU/GPU, SPU's fixed-point numerics.

    Its capabilities declare an MPC program (Capabilities.mpc_program), so PromptEvaluator
    takes the secure path (one-hot embedding lookups, handles kept in the backend), which is
    the program SPU runs.
    """

    name = "plaintext_fxp"

    def __init__(self, fraction_bits: int = 18, field: str = "FM64", **options):
        super().__init__()
        self.fxp_config = FxpConfig(fraction_bits=fraction_bits, field=field, **options)
        self.fraction_bits, self.field = fraction_bits, field
        self.capabilities = protocol_capabilities("plaintext_fxp", field, fraction_bits)

    def compile(self, f):
        return super().compile(fxp_transform(f, config=self.fxp_config))

    def __repr__(self):
        return f"PlaintextFxpBackend({self.fxp_config})"
