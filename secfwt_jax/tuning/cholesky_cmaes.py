"""CMA-ES with a Cholesky factor of C instead of its eigendecomposition (``cmaes_cholesky``).

A named deviation from :mod:`secfwt_jax.tuning.cmaes` (which follows Hansen's tutorial and
pycma and stays the default). Everything is that class's algorithm, eqs. (38)-(47) of N. Hansen,
"The CMA Evolution Strategy: A Tutorial" (arXiv:1604.00772), with the same parameters, the
same covariance update and the same lazy refactorisation rule (``eigen_interval`` tells between
factorisations, pycma's ``lazy_update_gap``), except the square root of C that sampling and
whitening use:

- ask draws ``y = A u`` with ``A`` the lower Cholesky factor of C (``C = A A^T``) instead of
  ``y = B D u``: the same distribution N(0, C), other samples;
- tell whitens with ``A^{-1}`` instead of the symmetric ``C^{-1/2} = B D^{-1} B^T``: the
  Mahalanobis norms of eq. (46) are the same (``||A^{-1} y|| = ||C^{-1/2} y||``); the step-size
  path of eq. (43) accumulates ``A^{-1} <y>_w``, which has the same distribution as
  ``C^{-1/2} <y>_w`` under random selection but is not invariant under rotations of the search
  space (the tutorial's reason to prefer the symmetric root). Cholesky-factor CMA-ES variants
  (e.g. Krause, Arbones & Igel, "CMA-ES with Optimal Covariance Update and Storage Complexity",
  NeurIPS 2016) show the same search behaviour on standard benchmarks; ``tests/test_optimizers.py``
  checks this one against pycma's evaluation counts as it does the default.

Why: the O(n^3) factorisation is what a generation costs at large n. LAPACK's Cholesky
(``potrf``, n^3 / 3 flops) is an order of magnitude faster than its symmetric eigensolver
(``syevd``), so this variant is the fast one (``experiments/bench_optimizer.py``).

Whitening without a solve: ask keeps the standard normal draws ``u`` and the candidates it
returned. When tell is given exactly those candidates (the tuning loop always tells what it
asked), ``A^{-1} y_k`` is ``u_k`` (``y_k = A u_k`` by construction; A does not change between
ask and tell), so tell takes the sorted ``u`` instead of solving with A: the same quantity,
without the float32 rounding of recomputing ``y_k = (z_k - m) / sigma`` and solving back (which
grows as sigma shrinks against the mean), and without the triangular solve, the largest part
of a tell (1.9 of 3.7 ms at n = 1000, lambda = 20, one thread). Candidates that differ from the
asked ones in any bit (injected or repaired points) are whitened by the triangular solve, as
before (``lax.cond``: only the taken branch runs, except under vmap).

If C is not numerically positive definite in float32 (Cholesky returns NaN), C is repaired as
the eigendecomposition path does (eigenvalues clipped from below, at ``eig_floor`` or
``10 n eps`` times the largest, whichever is larger; C rebuilt from them) and then factored.
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
    finish,
    full_covariance,
    lazy_factorise,
    recombine,
    step_size_and_paths,
)
from secfwt_jax.tuning.cmaes import eigen

__all__ = ["CholeskyCMAES", "CholeskyCMAESState", "cholesky_factor", "whiten"]


@struct.dataclass
class CholeskyCMAESState:
    """Everything this CMA-ES carries between generations (all leaves are arrays).

    As :class:`~secfwt_jax.tuning.cmaes.CMAESState`, with ``A (d, d)`` the lower Cholesky
    factor of the C of ``eigen_generation`` in place of ``B`` and ``D`` (between factorisations
    C moves on while A stays), and the last ask's standard normal draws ``u (popsize, d)`` and
    candidates ``asked (popsize, d)`` (zeros before the first ask).
    """

    key: jax.Array
    mean: jax.Array
    sigma: jax.Array
    C: jax.Array
    A: jax.Array
    p_sigma: jax.Array
    p_c: jax.Array
    generation: jax.Array
    eigen_generation: jax.Array
    best_x: jax.Array
    best_f: jax.Array
    u: jax.Array
    asked: jax.Array


def cholesky_factor(C: jax.Array, eig_floor: float) -> tuple[jax.Array, jax.Array]:
    """Symmetrise ``C (d, d)`` and factor it: returns ``(C, A)`` with ``C = A A^T`` and ``A``
    lower triangular. When C is not positive definite in float32, C is first rebuilt from its
    eigendecomposition with eigenvalues clipped from below."""
    C = 0.5 * (C + C.T)
    # symmetric already: jnp.linalg.cholesky would symmetrise it again (a pass over C, 2.4 ms
    # of a 10.9 ms factorisation at n = 1000 on one thread)
    A = jax.lax.linalg.cholesky(C, symmetrize_input=False)

    def repair(C):  # rare: C numerically indefinite; clip at least where Cholesky's rounding
        # error lives (~ n eps relative), so the rebuilt C factors
        floor = max(eig_floor, 10 * C.shape[0] * float(jnp.finfo(C.dtype).eps))
        rebuilt, _, _ = eigen(C, floor)
        return rebuilt, jax.lax.linalg.cholesky(rebuilt, symmetrize_input=False)

    return jax.lax.cond(jnp.all(jnp.isfinite(A)), lambda C: (C, A), repair, C)


def whiten(A: jax.Array, y: jax.Array) -> jax.Array:
    """Rows ``A^{-1} y_k`` of ``y (P, d)``, for ``A`` lower triangular: one triangular solve."""
    return jax.scipy.linalg.solve_triangular(A, y.T, lower=True).T


@dataclasses.dataclass(frozen=True)
class CholeskyCMAES(CMABase):
    """CMA-ES (full covariance, active weights, lazy factorisation) sampling and whitening with
    a Cholesky factor of C; see the module docstring for what differs from :class:`CMAES`."""

    separable: ClassVar[bool] = False
    State: ClassVar[type] = CholeskyCMAESState

    def initial_covariance(self, d: int) -> dict[str, jax.Array]:
        """C = A = I, factored at generation 0; no draws asked yet."""
        eye = jnp.eye(d, dtype=jnp.float32)
        none = jnp.zeros((self.popsize, d), jnp.float32)
        return dict(C=eye, A=eye, eigen_generation=jnp.zeros((), jnp.int32), u=none, asked=none)

    def sample_steps(self, state: CholeskyCMAESState, u: jax.Array) -> jax.Array:
        """y_k = A u_k ~ N(0, C), for ``u (popsize, dim)`` ~ N(0, I) (eq. (39) with A for B D)."""
        return mm(u, state.A.T)

    def kept_draws(self, u: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
        """ask keeps its draws and candidates for tell's whitening."""
        return dict(u=u, asked=z)

    def tell(self, state: CholeskyCMAESState, z: jax.Array, fitness: jax.Array):
        """Update mean, step size and covariance from ``fitness (popsize,)`` (minimised); NaN
        ranks worst. As :meth:`CMAES.tell` with ``A^{-1}`` for ``C^{-1/2}``."""
        p = self.params
        z, fitness, w, y, y_w, mean = recombine(p, state, z, fitness)  # eqs. (41), (42)
        order = jnp.argsort(fitness)  # recombine's ranking (stable, NaN already worst)
        white = jax.lax.cond(  # rows A^{-1} y_{i:lambda}: the draws themselves if z was asked
            jnp.array_equal(z, state.asked), lambda: state.u[order], lambda: whiten(state.A, y))
        white_y_w = mm(w[: p.mu], white[: p.mu])  # A^{-1} <y>_w
        p_sigma, sigma, p_c, h_sigma = step_size_and_paths(p, state, y_w, white_y_w)

        w_o = active_weights(p, w, jnp.sum(white**2, axis=1))  # eq. (46)
        C = full_covariance(p, state, h_sigma, p_c, y, w_o)  # eq. (47)
        (C, A), eigen_generation = lazy_factorise(  # lazy, as in cmaes.py
            p, state, C, lambda C: cholesky_factor(C, p.eig_floor), (state.A,))
        return finish(state, z, fitness, mean=mean, sigma=sigma, C=C, A=A,
                      p_sigma=p_sigma, p_c=p_c, eigen_generation=eigen_generation)
