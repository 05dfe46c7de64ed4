"""sep-CMA-ES: CMA-ES restricted to a diagonal covariance, for large dimensions.

R. Ros and N. Hansen, "A Simple Modification in CMA-ES Achieving Linear Time and Space
Complexity", PPSN X (2008). The update equations are those of full CMA-ES (Hansen's tutorial,
arXiv:1604.00772, eqs. (38)-(47)) with C kept diagonal: only the diagonal of the rank-one and
rank-mu terms is used, C^{-1/2} is elementwise, and the covariance learning rates are
multiplied by (n + 2) / 3 (Ros & Hansen, Sec. 2.2; see :meth:`CMAESParams.default`).
Cost per generation is O(popsize * n) instead of O(n^3), so d = 500 (BBT's default) is cheap.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from secfwt_jax.tuning.base import check_told, check_x0, mm, rankable, raw_key, update_best
from secfwt_jax.tuning.cmaes import CMAESParams


@struct.dataclass
class SepCMAESState:
    """State of sep-CMA-ES (all leaves are arrays).

    key (2,) uint32; mean (d,); sigma (); C (d,) the diagonal of the covariance;
    p_sigma (d,), p_c (d,) evolution paths; generation () int32; best_x (d,), best_f ().
    """

    key: jax.Array
    mean: jax.Array
    sigma: jax.Array
    C: jax.Array
    p_sigma: jax.Array
    p_c: jax.Array
    generation: jax.Array
    best_x: jax.Array
    best_f: jax.Array


@dataclasses.dataclass(frozen=True)
class SepCMAES:
    """sep-CMA-ES (diagonal covariance, Ros & Hansen 2008) as pure ask/tell."""

    params: CMAESParams

    def __post_init__(self):
        if not self.params.separable:
            raise ValueError(
                "SepCMAES needs CMAESParams built with separable=True (its larger learning "
                "rates); use SepCMAES.create(dim, ...)"
            )

    @classmethod
    def create(
        cls, dim: int, popsize: int | None = None, sigma0: float = 1.0, **kw
    ) -> SepCMAES:
        """``SepCMAES(CMAESParams.default(dim, popsize, sigma0, separable=True, **kw))``."""
        return cls(CMAESParams.default(dim, popsize, sigma0, separable=True, **kw))

    @property
    def dim(self) -> int:
        return self.params.dim

    @property
    def popsize(self) -> int:
        return self.params.popsize

    def init(self, key: jax.Array, x0: jax.Array) -> SepCMAESState:
        """Initial state: mean ``x0 (dim,)``, step size ``sigma0``, C = 1, zero paths."""
        d = self.dim
        x0 = check_x0(x0, d)
        return SepCMAESState(
            key=raw_key(key),
            mean=x0,
            sigma=jnp.asarray(self.params.sigma0, jnp.float32),
            C=jnp.ones((d,), jnp.float32),
            p_sigma=jnp.zeros((d,), jnp.float32),
            p_c=jnp.zeros((d,), jnp.float32),
            generation=jnp.zeros((), jnp.int32),
            best_x=x0,
            best_f=jnp.asarray(jnp.inf, jnp.float32),
        )

    def ask(self, state: SepCMAESState) -> tuple[jax.Array, SepCMAESState]:
        """Sample ``z (popsize, dim)`` ~ N(mean, sigma^2 diag(C)) (eqs. (38)-(40), B = I)."""
        key, sub = jax.random.split(state.key)
        u = jax.random.normal(sub, (self.popsize, self.dim), jnp.float32)
        z = state.mean + state.sigma * (u * jnp.sqrt(state.C))
        return z, state.replace(key=key)

    def tell(self, state: SepCMAESState, z: jax.Array, fitness: jax.Array) -> SepCMAESState:
        """Update from ``fitness (popsize,)`` (minimised); NaN ranks worst."""
        p = self.params
        z, fitness = check_told(z, fitness, p.popsize, p.dim)
        fitness = rankable(fitness)
        n = p.dim
        w = jnp.asarray(p.weights, jnp.float32)
        g = state.generation
        inv_sqrt_c = 1 / jnp.sqrt(state.C)  # C^{-1/2} of a diagonal C

        y = (z - state.mean) / state.sigma
        y = y[jnp.argsort(fitness)]  # y_{i:lambda}
        y_w = mm(w[: p.mu], y[: p.mu])  # eq. (41)
        mean = state.mean + p.c_m * state.sigma * y_w  # eq. (42)

        p_sigma = (1 - p.c_sigma) * state.p_sigma + math.sqrt(  # eq. (43)
            p.c_sigma * (2 - p.c_sigma) * p.mu_eff
        ) * (inv_sqrt_c * y_w)
        norm_ps = jnp.linalg.norm(p_sigma)
        sigma = state.sigma * jnp.exp((p.c_sigma / p.d_sigma) * (norm_ps / p.chi_n - 1))  # (44)

        gen = (g + 1).astype(jnp.float32)
        h_sigma = (  # App. A, below eq. (47)
            norm_ps / jnp.sqrt(1 - (1 - p.c_sigma) ** (2 * gen))
            < (1.4 + 2 / (n + 1)) * p.chi_n
        ).astype(jnp.float32)
        p_c = (1 - p.c_c) * state.p_c + h_sigma * math.sqrt(  # eq. (45)
            p.c_c * (2 - p.c_c) * p.mu_eff
        ) * y_w

        mahal2 = jnp.sum((y * inv_sqrt_c) ** 2, axis=1)
        w_o = w * jnp.where(w >= 0, 1.0, n / jnp.maximum(mahal2, 1e-30))  # eq. (46)
        delta_h = (1 - h_sigma) * p.c_c * (2 - p.c_c)
        C = (  # eq. (47), diagonal part only (Ros & Hansen 2008)
            (1 + p.c_1 * delta_h - p.c_1 - p.c_mu * float(sum(p.weights))) * state.C
            + p.c_1 * p_c**2
            + p.c_mu * mm(w_o, y**2)
        )
        # active weights are bounded by eq. (52), so C stays positive up to float32 rounding
        C = jnp.maximum(C, p.eig_floor * jnp.max(C))

        best_x, best_f = update_best(state.best_x, state.best_f, z, fitness)
        return state.replace(
            mean=mean,
            sigma=sigma,
            C=C,
            p_sigma=p_sigma,
            p_c=p_c,
            generation=g + 1,
            best_x=best_x,
            best_f=best_f,
        )
