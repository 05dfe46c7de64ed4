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
import math

import jax
import jax.numpy as jnp
from flax import struct

from secfwt_jax.tuning.base import (
    check_told,
    check_x0,
    default_popsize,
    mm,
    rankable,
    raw_key,
    update_best,
)


@dataclasses.dataclass(frozen=True)
class CMAESParams:
    """Hyper-parameters of (sep-)CMA-ES; Python scalars, so ``jit`` folds them as constants.

    Build with :meth:`default` (Table 1 of the tutorial). ``weights`` has one entry per rank
    (``popsize`` of them), positive for the ``mu`` best, negative (active CMA) or zero after.
    """

    dim: int
    popsize: int
    mu: int
    weights: tuple[float, ...]
    mu_eff: float
    c_m: float
    c_sigma: float
    d_sigma: float
    c_c: float
    c_1: float
    c_mu: float
    chi_n: float
    sigma0: float
    eig_floor: float = 1e-14
    separable: bool = False
    eigen_interval: int = 1

    @classmethod
    def default(
        cls,
        dim: int,
        popsize: int | None = None,
        sigma0: float = 1.0,
        active: bool = True,
        separable: bool = False,
        eig_floor: float = 1e-14,
        eigen_interval: int | None = None,
    ) -> CMAESParams:
        """Default strategy parameters for dimension ``dim`` (tutorial Table 1).

        ``separable=True`` gives sep-CMA-ES (Ros & Hansen, PPSN 2008): the covariance
        learning rates are multiplied by ``(dim + 2) / 3`` (their Sec. 2.2,
        ``c_cov^sep = min(1, (n + 2) / 3 * c_cov)``), which is sound because a diagonal C has
        ``n`` instead of ``n^2 / 2`` free parameters. ``active=False`` zeroes the negative
        weights (the pre-2016 CMA-ES).

        ``eigen_interval`` (generations between eigendecompositions of C; full CMA-ES only):
        ``None`` takes pycma's rule (``GaussFullSampler.update_now`` with ``lazy_update_gap =
        1 / ((c_1 + c_mu) n 10)``: decompose once ``gap`` tells have passed), i.e.
        ``max(1, ceil(gap))``; the tutorial's Sec. B.2 states the same gap rounded down,
        ``max(1, floor(gap))``. ``1`` decomposes in every tell (this class's former behaviour).
        """
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        n = float(dim)
        lam = default_popsize(dim) if popsize is None else int(popsize)
        if lam < 2:
            raise ValueError(f"popsize must be >= 2, got {popsize}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        mu = lam // 2  # eq. (48)
        # eq. (49): raw weights for every rank, positive for the mu best
        w_raw = [math.log((lam + 1) / 2) - math.log(i) for i in range(1, lam + 1)]
        w_pos = [w for w in w_raw if w > 0]
        w_neg = [w for w in w_raw if w < 0]
        mu_eff = sum(w_pos) ** 2 / sum(w * w for w in w_pos)  # eq. (8) on the positive weights
        mu_eff_neg = sum(w_neg) ** 2 / sum(w * w for w in w_neg) if w_neg else 0.0

        c_sigma = (mu_eff + 2) / (n + mu_eff + 5)  # eq. (55)
        d_sigma = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma  # eq. (55)
        c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)  # eq. (56)
        alpha_cov = 2.0
        c_1 = alpha_cov / ((n + 1.3) ** 2 + mu_eff)  # eq. (57)
        c_mu = min(  # eq. (58), with the 1/4 offset of the current tutorial and pycma
            1 - c_1,
            alpha_cov * (0.25 + mu_eff + 1 / mu_eff - 2) / ((n + 2) ** 2 + alpha_cov * mu_eff / 2),
        )
        if separable:  # Ros & Hansen 2008, Sec. 2.2
            c_1 = min(1.0, c_1 * (n + 2) / 3)
            c_mu = min(1 - c_1, c_mu * (n + 2) / 3)

        sum_pos = sum(w_pos)
        sum_neg = -sum(w_neg)
        if active and w_neg and c_mu > 0:
            alpha_mu = 1 + c_1 / c_mu  # eq. (50)
            alpha_mu_eff = 1 + 2 * mu_eff_neg / (mu_eff + 2)  # eq. (51)
            alpha_posdef = (1 - c_1 - c_mu) / (n * c_mu)  # eq. (52)
            neg_scale = min(alpha_mu, alpha_mu_eff, alpha_posdef) / sum_neg
        else:
            neg_scale = 0.0
        weights = tuple(  # eq. (53): positive ones sum to 1, negative ones to -min(alpha)
            w / sum_pos if w >= 0 else w * neg_scale for w in w_raw
        )
        chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))  # E||N(0,I)||, App. A
        if eigen_interval is None:  # pycma's lazy_update_gap (its default updatecovwait=None)
            eigen_interval = max(1, math.ceil(1 / ((c_1 + c_mu + 1e-23) * n * 10)))
        if int(eigen_interval) != eigen_interval or eigen_interval < 1:
            raise ValueError(f"eigen_interval must be an int >= 1 or None, got {eigen_interval!r}")
        return cls(
            dim=dim,
            popsize=lam,
            mu=mu,
            weights=weights,
            mu_eff=mu_eff,
            c_m=1.0,  # eq. (54)
            c_sigma=c_sigma,
            d_sigma=d_sigma,
            c_c=c_c,
            c_1=c_1,
            c_mu=c_mu,
            chi_n=chi_n,
            sigma0=float(sigma0),
            eig_floor=eig_floor,
            separable=separable,
            eigen_interval=int(eigen_interval),
        )


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
class CMAES:
    """CMA-ES (Hansen's tutorial, full covariance, active weights) as pure ask/tell.

    ``params`` holds the hyper-parameters; ``init/ask/tell`` are pure and jittable.
    """

    params: CMAESParams

    @classmethod
    def create(cls, dim: int, popsize: int | None = None, sigma0: float = 1.0, **kw) -> CMAES:
        """``CMAES(CMAESParams.default(dim, popsize, sigma0, **kw))``."""
        return cls(CMAESParams.default(dim, popsize, sigma0, separable=False, **kw))

    @property
    def dim(self) -> int:
        return self.params.dim

    @property
    def popsize(self) -> int:
        return self.params.popsize

    def init(self, key: jax.Array, x0: jax.Array) -> CMAESState:
        """Initial state: mean ``x0 (dim,)``, step size ``sigma0``, C = I, zero paths."""
        d = self.dim
        x0 = check_x0(x0, d)
        return CMAESState(
            key=raw_key(key),
            mean=x0,
            sigma=jnp.asarray(self.params.sigma0, jnp.float32),
            C=jnp.eye(d, dtype=jnp.float32),
            B=jnp.eye(d, dtype=jnp.float32),
            D=jnp.ones((d,), jnp.float32),
            p_sigma=jnp.zeros((d,), jnp.float32),
            p_c=jnp.zeros((d,), jnp.float32),
            generation=jnp.zeros((), jnp.int32),
            eigen_generation=jnp.zeros((), jnp.int32),
            best_x=x0,
            best_f=jnp.asarray(jnp.inf, jnp.float32),
        )

    def ask(self, state: CMAESState) -> tuple[jax.Array, CMAESState]:
        """Sample ``popsize`` candidates ``z (popsize, dim)`` ~ N(mean, sigma^2 C)."""
        key, sub = jax.random.split(state.key)
        u = jax.random.normal(sub, (self.popsize, self.dim), jnp.float32)  # eq. (38)
        y = mm(u * state.D, state.B.T)  # eq. (39): y_k = B D z_k ~ N(0, C)
        z = state.mean + state.sigma * y  # eq. (40): x_k = m + sigma y_k
        return z, state.replace(key=key)

    def tell(self, state: CMAESState, z: jax.Array, fitness: jax.Array) -> CMAESState:
        """Update mean, step size and covariance from ``fitness (popsize,)`` (minimised).

        NaN fitness ranks worst. ``z`` must be what :meth:`ask` returned (or any points: the
        steps are recomputed as ``(z - mean) / sigma``, as pycma does).
        """
        p = self.params
        z, fitness = check_told(z, fitness, p.popsize, p.dim)
        fitness = rankable(fitness)
        n = p.dim
        w = jnp.asarray(p.weights, jnp.float32)
        g = state.generation

        y = (z - state.mean) / state.sigma  # y_k = (x_k - m) / sigma ~ N(0, C)
        order = jnp.argsort(fitness)  # stable: ties keep their sampling order
        y = y[order]  # y_{i:lambda}

        # eq. (41): <y>_w = sum_{i<=mu} w_i y_{i:lambda} (positive weights only)
        y_w = mm(w[: p.mu], y[: p.mu])
        mean = state.mean + p.c_m * state.sigma * y_w  # eq. (42)

        # C^{-1/2} = B D^{-1} B^T. One O(lambda n^2) product serves both uses below: the rows
        # of y B D^{-1} are (B^T C^{-1/2} y_k)^T, and B is orthogonal, so their norms are the
        # Mahalanobis norms of eq. (46), and <y>_w B D^{-1} = w . (y B D^{-1}) (eq. (43)).
        ybd = mm(y, state.B) / state.D  # (popsize, n)

        # eq. (43): p_sigma <- (1 - c_s) p_sigma + sqrt(c_s (2 - c_s) mu_eff) C^{-1/2} <y>_w
        p_sigma = (1 - p.c_sigma) * state.p_sigma + math.sqrt(
            p.c_sigma * (2 - p.c_sigma) * p.mu_eff
        ) * mm(mm(w[: p.mu], ybd[: p.mu]), state.B.T)
        norm_ps = jnp.linalg.norm(p_sigma)
        # eq. (44): sigma <- sigma exp(c_s / d_s (||p_sigma|| / E||N(0,I)|| - 1))
        sigma = state.sigma * jnp.exp((p.c_sigma / p.d_sigma) * (norm_ps / p.chi_n - 1))

        # h_sigma (App. A, below eq. (47)): stall the rank-one update while ||p_sigma|| is long
        gen = (g + 1).astype(jnp.float32)
        h_sigma = (
            norm_ps / jnp.sqrt(1 - (1 - p.c_sigma) ** (2 * gen))
            < (1.4 + 2 / (n + 1)) * p.chi_n
        ).astype(jnp.float32)
        # eq. (45): p_c <- (1 - c_c) p_c + h_sigma sqrt(c_c (2 - c_c) mu_eff) <y>_w
        p_c = (1 - p.c_c) * state.p_c + h_sigma * math.sqrt(
            p.c_c * (2 - p.c_c) * p.mu_eff
        ) * y_w

        # eq. (46): w_i^o = w_i * (1 if w_i >= 0 else n / ||C^{-1/2} y_{i:lambda}||^2)
        mahal2 = jnp.sum(ybd**2, axis=1)  # ||C^{-1/2} y_{i:lambda}||^2
        w_o = w * jnp.where(w >= 0, 1.0, n / jnp.maximum(mahal2, 1e-30))
        # delta(h_sigma) = (1 - h_sigma) c_c (2 - c_c) <= 1  (App. A, below eq. (47))
        delta_h = (1 - h_sigma) * p.c_c * (2 - p.c_c)
        # eq. (47): C <- (1 + c_1 delta(h) - c_1 - c_mu sum w_j) C
        #                 + c_1 p_c p_c^T + c_mu sum_i w_i^o y_{i:lambda} y_{i:lambda}^T
        C = (
            (1 + p.c_1 * delta_h - p.c_1 - p.c_mu * float(sum(p.weights))) * state.C
            + p.c_1 * jnp.outer(p_c, p_c)
            + p.c_mu * mm(y.T * w_o, y)
        )
        # Lazy B, D (tutorial Sec. B.2; pycma's update_now): the O(n^3) eigendecomposition
        # runs once eigen_interval tells have passed since the last one; lax.cond executes
        # only the taken branch (under vmap it becomes a select and computes both).
        due = g + 1 - state.eigen_generation >= p.eigen_interval
        C, B, D = jax.lax.cond(
            due,
            lambda C: eigen(C, p.eig_floor),
            lambda C: (C, state.B, state.D),
            C,
        )
        eigen_generation = jnp.where(due, g + 1, state.eigen_generation)

        best_x, best_f = update_best(state.best_x, state.best_f, z, fitness)
        return state.replace(
            mean=mean,
            sigma=sigma,
            C=C,
            B=B,
            D=D,
            p_sigma=p_sigma,
            p_c=p_c,
            generation=g + 1,
            eigen_generation=eigen_generation,
            best_x=best_x,
            best_f=best_f,
        )
