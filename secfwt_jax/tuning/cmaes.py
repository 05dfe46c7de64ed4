"""CMA-ES with full covariance, as jittable ask/tell on a state pytree.

Follows N. Hansen, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772 (v2): the
algorithm summary in Appendix A, eqs. (38)-(47), and the default parameters of Table 1,
eqs. (48)-(58), including the negative ("active") recombination weights of eqs. (50)-(53).
Equation numbers in comments refer to that text.

B and D are updated lazily, as pycma does and the tutorial recommends (App. B.2, strategy
internal numerical effort: amortised O(n^2) per generation): C is updated in every tell, but
decomposed only every ``eigen_interval`` generations (see :meth:`CMAESParams.default`); in
between, ask samples and tell whitens with the last B and D. The generation of the last
decomposition is part of the state, so a checkpoint resumes exactly.

Numerics are float32. Two safeguards make the covariance update robust without float64:
the covariance matrix is symmetrised before each eigendecomposition, and eigenvalues are
clipped from below at ``eig_floor`` times the largest one (float32 noise can drive the
smallest ones of an ill-conditioned C slightly negative). Matmuls run at full float32
precision on every backend (no TF32 on GPUs).
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
    CMAESParams,
    active_weights,
    finish,
    full_covariance,
    lazy_factorise,
    recombine,
    step_size_and_paths,
)

__all__ = ["CMAES", "CMAESParams", "CMAESState", "eigen"]


@struct.dataclass
class CMAESState:
    """Everything CMA-ES carries between generations (all leaves are arrays).

    key (2,) uint32; mean (d,); sigma (); C (d, d) covariance; B (d, d) its eigenvectors
    (columns); D (d,) square roots of its eigenvalues, so C = B diag(D^2) B^T; p_sigma (d,)
    and p_c (d,) evolution paths; generation () int32 (completed tells); eigen_generation ()
    int32, the generation at which B and D were last computed from C (the lazy-update
    counter); best_x (d,), best_f () the best point evaluated so far. Between
    decompositions C moves on while B and D stay those of the C of ``eigen_generation``.
    """

    key: jax.Array
    mean: jax.Array
    sigma: jax.Array
    C: jax.Array
    B: jax.Array
    D: jax.Array
    p_sigma: jax.Array
    p_c: jax.Array
    generation: jax.Array
    eigen_generation: jax.Array
    best_x: jax.Array
    best_f: jax.Array


def eigen(C: jax.Array, eig_floor: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Symmetrise ``C (d, d)`` and decompose it: returns ``(C, B (d, d), D (d,))``.

    C = B diag(D^2) B^T (tutorial Sec. 0.1). Eigenvalues below ``eig_floor * max`` are
    clipped to it; when any is clipped, C is rebuilt from the clipped decomposition so that
    the stored matrix stays positive definite.
    """
    C = 0.5 * (C + C.T)
    d2, B = jnp.linalg.eigh(C, symmetrize_input=False)  # symmetrised just above
    floor = eig_floor * jnp.max(d2)
    clipped = jnp.any(d2 < floor)
    d2 = jnp.maximum(d2, floor)

    def rebuild(C):  # O(n^3): only when an eigenvalue was clipped
        rebuilt = mm(B * d2, B.T)
        return 0.5 * (rebuilt + rebuilt.T)

    C = jax.lax.cond(clipped, rebuild, lambda C: C, C)
    return C, B, jnp.sqrt(d2)


@dataclasses.dataclass(frozen=True)
class CMAES(CMABase):
    """CMA-ES (Hansen's tutorial, full covariance, active weights) as pure ask/tell.

    ``params`` holds the hyper-parameters; ``init/ask/tell`` are pure and jittable
    (create, init and ask: :class:`~secfwt_jax.tuning.cma_base.CMABase`).
    """

    separable: ClassVar[bool] = False
    State: ClassVar[type] = CMAESState

    def initial_covariance(self, d: int) -> dict[str, jax.Array]:
        """C = B = I, D = 1, decomposed at generation 0."""
        return dict(
            C=jnp.eye(d, dtype=jnp.float32),
            B=jnp.eye(d, dtype=jnp.float32),
            D=jnp.ones((d,), jnp.float32),
            eigen_generation=jnp.zeros((), jnp.int32),
        )

    def sample_steps(self, state: CMAESState, u: jax.Array) -> jax.Array:
        """eq. (39): y_k = B D u_k ~ N(0, C), for ``u (popsize, dim)`` ~ N(0, I)."""
        return mm(u * state.D, state.B.T)

    def tell(self, state: CMAESState, z: jax.Array, fitness: jax.Array) -> CMAESState:
        """Update mean, step size and covariance from ``fitness (popsize,)`` (minimised).

        NaN fitness ranks worst. ``z`` must be what :meth:`ask` returned (or any points: the
        steps are recomputed as ``(z - mean) / sigma``, as pycma does).
        """
        p = self.params
        z, fitness, w, y, y_w, mean = recombine(p, state, z, fitness)  # eqs. (41), (42)

        # C^{-1/2} = B D^{-1} B^T. One O(lambda n^2) product serves both uses below: the rows
        # of y B D^{-1} are (B^T C^{-1/2} y_k)^T, and B is orthogonal, so their norms are the
        # Mahalanobis norms of eq. (46), and <y>_w B D^{-1} = w . (y B D^{-1}) (eq. (43)).
        ybd = mm(y, state.B) / state.D  # (popsize, n)
        white_y_w = mm(mm(w[: p.mu], ybd[: p.mu]), state.B.T)  # C^{-1/2} <y>_w
        p_sigma, sigma, p_c, h_sigma = step_size_and_paths(p, state, y_w, white_y_w)

        w_o = active_weights(p, w, jnp.sum(ybd**2, axis=1))  # eq. (46)
        C = full_covariance(p, state, h_sigma, p_c, y, w_o)  # eq. (47)
        (C, B, D), eigen_generation = lazy_factorise(  # lazy B, D (tutorial Sec. B.2)
            p, state, C, lambda C: eigen(C, p.eig_floor), (state.B, state.D))
        return finish(state, z, fitness, mean=mean, sigma=sigma, C=C, B=B, D=D,
                      p_sigma=p_sigma, p_c=p_c, eigen_generation=eigen_generation)
