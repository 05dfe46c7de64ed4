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
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from secfwt_jax.tuning.base import mm
from secfwt_jax.tuning.cma_base import (
    CMABase,
    active_weights,
    covariance_decay,
    finish,
    recombine,
    step_size_and_paths,
)


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
class SepCMAES(CMABase):
    """sep-CMA-ES (diagonal covariance, Ros & Hansen 2008) as pure ask/tell (create, init and
    ask: :class:`~secfwt_jax.tuning.cma_base.CMABase`)."""

    separable: ClassVar[bool] = True
    State: ClassVar[type] = SepCMAESState

    def __post_init__(self):
        if not self.params.separable:
            raise ValueError(
                "SepCMAES needs CMAESParams built with separable=True (its larger learning "
                "rates); use SepCMAES.create(dim, ...)"
            )

    def initial_covariance(self, d: int) -> dict[str, jax.Array]:
        """C = 1 (the diagonal of I)."""
        return dict(C=jnp.ones((d,), jnp.float32))

    def sample_steps(self, state: SepCMAESState, u: jax.Array) -> jax.Array:
        """eq. (39) with B = I: y_k = sqrt(C) u_k ~ N(0, diag(C))."""
        return u * jnp.sqrt(state.C)

    def tell(self, state: SepCMAESState, z: jax.Array, fitness: jax.Array) -> SepCMAESState:
        """Update from ``fitness (popsize,)`` (minimised); NaN ranks worst."""
        p = self.params
        z, fitness, w, y, y_w, mean = recombine(p, state, z, fitness)  # eqs. (41), (42)
        inv_sqrt_c = 1 / jnp.sqrt(state.C)  # C^{-1/2} of a diagonal C
        p_sigma, sigma, p_c, h_sigma = step_size_and_paths(p, state, y_w, inv_sqrt_c * y_w)

        w_o = active_weights(p, w, jnp.sum((y * inv_sqrt_c) ** 2, axis=1))  # eq. (46)
        C = (  # eq. (47), diagonal part only (Ros & Hansen 2008)
            covariance_decay(p, h_sigma) * state.C
            + p.c_1 * p_c**2
            + p.c_mu * mm(w_o, y**2)
        )
        # active weights are bounded by eq. (52), so C stays positive up to float32 rounding
        C = jnp.maximum(C, p.eig_floor * jnp.max(C))
        return finish(state, z, fitness, mean=mean, sigma=sigma, C=C, p_sigma=p_sigma, p_c=p_c)
