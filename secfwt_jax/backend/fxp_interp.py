"""The jaxpr interpreter of the fixed-point emulation: `fxp_transform(fn)` evaluates fn's jaxpr
the way SPU 0.9.5 evaluates the compiled program on secret inputs (fxp.py's docstring and
docs/fxp.md say what is emulated).

Secret floating-point primitives with a rule (products, matmuls, division, the non-linear
functions) go through FxpApprox (fxp_approx.py); primitives exact in the ring are evaluated
as-is; public computations are folded like XLA folds them. A secret floating-point primitive
with no rule raises NotImplementedError. No spu import here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .fxp_approx import FxpApprox
from .fxp_arith import FxpArith, FxpConfig

try:  # jax >= 0.4.33 exports the jaxpr types here; older versions only in jax.core.
    from jax.extend.core import Literal as _Literal
except ImportError:  # pragma: no cover - old jax
    from jax.core import Literal as _Literal


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
    def __init__(self, arith: FxpApprox):
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

    def _operands(self, eqn, ins):
        """(secret, arrays) of a control-flow primitive: all operands enter as secrets (public
        floats encoded) when any is secret, else as they are."""
        secret = any(v.secret for v in ins)
        avals = [v.aval for v in eqn.invars]
        return secret, [self._float_in(v, a) if secret else v.array for v, a in zip(ins, avals)]

    def _while(self, eqn, ins):
        p = eqn.params
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        secret, arr = self._operands(eqn, ins)
        ca, ba, ia = arr[:nc], arr[nc:nc + nb], arr[nc + nb:]
        cond_f = self._body_fn(p["cond_jaxpr"], secret)
        body_f = self._body_fn(p["body_jaxpr"], secret)
        out = jax.lax.while_loop(
            lambda c: cond_f(*ca, *c)[0], lambda c: tuple(body_f(*ba, *c)), tuple(ia)
        )
        return [_Value(o, secret) for o in out]

    def _scan(self, eqn, ins):
        p = eqn.params
        n_consts, n_carry = _scan_group_sizes(p)
        secret, arr = self._operands(eqn, ins)
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


def _scan_group_sizes(params) -> tuple[int, int]:
    """(number of constants, number of carried values) of a scan equation: jax <= 0.4.x names
    them num_consts / num_carry; newer jax (0.12) gives the operands as one flat tree of three
    groups, `ft_in` = (consts, carry, xs), whose lengths are the groups' leaf counts."""
    if "num_consts" in params:
        return params["num_consts"], params["num_carry"]
    consts, carry, _ = params["ft_in"].unpack()
    return len(consts), len(carry)


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
        arith = FxpApprox(config)
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
