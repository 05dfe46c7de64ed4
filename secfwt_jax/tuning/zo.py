"""Zeroth-order SGD: two-point (SPSA / MeZO) gradient estimates fed to an optax optimizer.

With ``n = popsize / 2`` random directions ``u_i`` and a perturbation scale ``mu``, ``ask``
returns the antithetic pairs ``x + mu u_i`` (first half) and ``x - mu u_i`` (second half);
``tell`` forms the two-point estimate

    g = 1/n sum_i (f(x + mu u_i) - f(x - mu u_i)) / (2 mu) u_i

(Spall 1992, SPSA, with Rademacher u; Malladi et al. 2023, MeZO, Alg. 1, with Gaussian u and
n = 1) and applies one optax update to x. For Gaussian u, E[g] is the gradient of the
Gaussian-smoothed f (Nesterov & Spokoiny 2017).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from secfwt_jax.tuning.base import (
    SizedByParams,
    check_told,
    check_x0,
    default_popsize,
    rankable,
    raw_key,
    update_best,
)

ZO_OPTIMIZERS = ("sgd", "adam", "adamw")
ZO_DIRECTIONS = ("gaussian", "rademacher")


@dataclasses.dataclass(frozen=True)
class ZOParams:
    """Hyper-parameters of ZO-SGD.

    dim; popsize (even: popsize / 2 antithetic pairs per step); mu the perturbation scale
    (in the units of x); optimizer one of ``ZO_OPTIMIZERS``; learning_rate; momentum
    (``sgd`` only, ``None`` for plain SGD); direction ``gaussian`` (MeZO) or ``rademacher``
    (SPSA).
    """

    dim: int
    popsize: int
    mu: float = 1e-2
    optimizer: str = "sgd"
    learning_rate: float = 1e-2
    momentum: float | None = None
    direction: str = "gaussian"

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.popsize < 2 or self.popsize % 2:
            raise ValueError(
                f"ZO popsize must be even and >= 2 (antithetic pairs), got {self.popsize}"
            )
        if not self.mu > 0:
            raise ValueError(f"perturbation scale mu must be > 0, got {self.mu}")
        if self.optimizer not in ZO_OPTIMIZERS:
            raise ValueError(
                f"unknown ZO optimizer {self.optimizer!r}; accepted: {', '.join(ZO_OPTIMIZERS)}"
            )
        if self.direction not in ZO_DIRECTIONS:
            raise ValueError(
                f"unknown ZO direction {self.direction!r}; accepted: {', '.join(ZO_DIRECTIONS)}"
            )
        if self.momentum is not None and self.optimizer != "sgd":
            raise ValueError(f"momentum applies to optimizer='sgd' only, got {self.optimizer!r}")


@struct.dataclass
class ZOState:
    """State of ZO-SGD (all leaves are arrays).

    key (2,) uint32; mean (d,) the current iterate x; opt_state the optax state;
    grad (d,) the last gradient estimate; generation () int32; best_x (d,), best_f () the
    best perturbed point evaluated so far.
    """

    key: jax.Array
    mean: jax.Array
    opt_state: Any
    grad: jax.Array
    generation: jax.Array
    best_x: jax.Array
    best_f: jax.Array


@dataclasses.dataclass(frozen=True)
class ZOSGD(SizedByParams):
    """Two-point zeroth-order SGD with an optax update, as pure ask/tell."""

    params: ZOParams

    @classmethod
    def create(
        cls, dim: int, popsize: int | None = None, sigma0: float = 1e-2, **kw
    ) -> ZOSGD:
        """Build with ``mu = sigma0`` (the search scale). Default popsize: the CMA-ES rule
        ``4 + floor(3 ln d)`` rounded up to even, so budgets compare across optimizers."""
        if popsize is None:
            popsize = default_popsize(dim)
            popsize += popsize % 2
        return cls(ZOParams(dim=dim, popsize=popsize, mu=float(sigma0), **kw))

    def transform(self) -> optax.GradientTransformation:
        """The optax optimizer named by ``params.optimizer``."""
        p = self.params
        if p.optimizer == "sgd":
            return optax.sgd(p.learning_rate, momentum=p.momentum)
        if p.optimizer == "adam":
            return optax.adam(p.learning_rate)
        return optax.adamw(p.learning_rate)

    def init(self, key: jax.Array, x0: jax.Array) -> ZOState:
        """Initial state at ``x0 (dim,)``."""
        x0 = check_x0(x0, self.dim)
        return ZOState(
            key=raw_key(key),
            mean=x0,
            opt_state=self.transform().init(x0),
            grad=jnp.zeros_like(x0),
            generation=jnp.zeros((), jnp.int32),
            best_x=x0,
            best_f=jnp.asarray(jnp.inf, jnp.float32),
        )

    def ask(self, state: ZOState) -> tuple[jax.Array, ZOState]:
        """``z (popsize, dim)``: rows ``[x + mu u_1 .. x + mu u_n, x - mu u_1 .. x - mu u_n]``."""
        p = self.params
        key, sub = jax.random.split(state.key)
        shape = (p.popsize // 2, p.dim)
        if p.direction == "gaussian":
            u = jax.random.normal(sub, shape, jnp.float32)
        else:
            u = jax.random.rademacher(sub, shape, jnp.float32)
        z = jnp.concatenate([state.mean + p.mu * u, state.mean - p.mu * u])
        return z, state.replace(key=key)

    def tell(self, state: ZOState, z: jax.Array, fitness: jax.Array) -> ZOState:
        """Two-point estimate from ``fitness (popsize,)`` and one optax step on the mean.

        NaN fitness is not masked: it propagates into the mean, so a tuning loop sees it.
        """
        p = self.params
        z, fitness = check_told(z, fitness, p.popsize, p.dim)
        n = p.popsize // 2
        # u_i recomputed from the pair, so any z of the asked form is accepted
        u = (z[:n] - z[n:]) / (2 * p.mu)
        slope = (fitness[:n] - fitness[n:]) / (2 * p.mu)  # directional derivative estimates
        grad = jnp.mean(slope[:, None] * u, axis=0)
        tx = self.transform()
        updates, opt_state = tx.update(grad, state.opt_state, state.mean)
        mean = optax.apply_updates(state.mean, updates)
        best_x, best_f = update_best(state.best_x, state.best_f, z, rankable(fitness))
        return state.replace(
            mean=mean,
            opt_state=opt_state,
            grad=grad,
            generation=state.generation + 1,
            best_x=best_x,
            best_f=best_f,
        )
