"""The ask/tell protocol shared by every gradient-free optimizer, and small helpers.

An optimizer is a frozen object holding only hyper-parameters (a frozen ``Params``
dataclass); everything that changes lives in a ``State`` pytree. The three pure functions

    state = opt.init(key, x0)              # x0 (dim,)
    z, state = opt.ask(state)              # z (popsize, dim): candidates to evaluate
    state = opt.tell(state, z, fitness)    # fitness (popsize,), minimised

are jittable (``jax.jit(opt.ask)``) and deterministic: the PRNG key is part of the state, so
the same key and the same fitness values give the same states bit for bit. Every state has
the fields ``key``, ``mean``, ``best_x``, ``best_f`` and ``generation``, so a tuning loop never
branches on which optimizer it drives.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

# float32 matmuls on GPUs default to reduced-precision (TF32) passes; the covariance updates
# need full float32, and CPU and GPU should agree.
HIGHEST = jax.lax.Precision.HIGHEST


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at full float32 precision on every backend."""
    return jnp.matmul(a, b, precision=HIGHEST)


class Optimizer(Protocol):
    """What a tuning loop may rely on: ``dim``, ``popsize`` and the three pure functions."""

    @property
    def dim(self) -> int: ...

    @property
    def popsize(self) -> int: ...

    def init(self, key: jax.Array, x0: jax.Array) -> Any: ...

    def ask(self, state: Any) -> tuple[jax.Array, Any]: ...

    def tell(self, state: Any, z: jax.Array, fitness: jax.Array) -> Any: ...


class SizedByParams:
    """``dim`` and ``popsize`` of an optimizer read from its ``params`` (CMA-ES, ZO-SGD)."""

    @property
    def dim(self) -> int:
        return self.params.dim

    @property
    def popsize(self) -> int:
        return self.params.popsize


def raw_key(key: jax.Array) -> jax.Array:
    """Return ``key`` as raw ``uint32`` key data (shape ``(2,)`` for threefry).

    Raw data (rather than a typed ``jax.random.key``) keeps every state leaf a plain array,
    so checkpoints are ordinary numeric arrays. Typed keys are converted, an int seed is an
    error (pass ``jax.random.PRNGKey(seed)``).
    """
    if isinstance(key, int):
        raise TypeError(f"init expects a PRNG key, got the int {key!r}; use jax.random.PRNGKey")
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.dtype != jnp.uint32:
        raise TypeError(f"PRNG key must be uint32 key data or a typed key, got dtype {key.dtype}")
    return key


def check_x0(x0: jax.Array, dim: int) -> jax.Array:
    """Return ``x0`` as a float32 vector of shape ``(dim,)``; raise on any other shape."""
    x0 = jnp.asarray(x0, dtype=jnp.float32)
    if x0.shape != (dim,):
        raise ValueError(f"x0 has shape {x0.shape}; the optimizer was built for shape ({dim},)")
    return x0


def check_told(z: jax.Array, fitness: jax.Array, popsize: int, dim: int) -> tuple:
    """Shape-check what is told back: ``z (popsize, dim)``, ``fitness (popsize,)`` (static).

    Returns both as float32 arrays (a float64 loss from numpy is rounded to float32).
    """
    z, fitness = jnp.asarray(z), jnp.asarray(fitness)
    if z.shape != (popsize, dim):
        raise ValueError(f"z has shape {z.shape}; expected ({popsize}, {dim}) as asked")
    if fitness.shape != (popsize,):
        raise ValueError(f"fitness has shape {fitness.shape}; expected ({popsize},)")
    return z.astype(jnp.float32), fitness.astype(jnp.float32)


def rankable(fitness: jax.Array) -> jax.Array:
    """NaN fitness is ranked worst: it becomes ``+inf`` (documented rule, not a silent fix)."""
    return jnp.where(jnp.isnan(fitness), jnp.inf, fitness)


def update_best(
    best_x: jax.Array, best_f: jax.Array, z: jax.Array, fitness: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Keep the best evaluated point so far: ``(best_x (dim,), best_f ())``.

    ``fitness`` must already be rankable (no NaN). Ties keep the older point.
    """
    i = jnp.argmin(fitness)
    better = fitness[i] < best_f
    return jnp.where(better, z[i], best_x), jnp.where(better, fitness[i], best_f)


def default_popsize(dim: int) -> int:
    """``4 + floor(3 ln dim)``: Hansen's tutorial (arXiv:1604.00772), Table 1, eq. (48)."""
    import math

    return 4 + int(math.floor(3 * math.log(dim)))
