"""What CMA-ES and sep-CMA-ES share: the strategy parameters, the create/init/ask skeleton and
the parts of tell that do not depend on the shape of the covariance.

Equation numbers refer to N. Hansen, "The CMA Evolution Strategy: A Tutorial",
arXiv:1604.00772 (v2), Appendix A and Table 1. The two variants differ only in how the
covariance C is stored (full matrix with its eigendecomposition B, D in cmaes.py; its diagonal in
sep_cmaes.py), so only sampling (``sample_steps``), whitening and the covariance update are theirs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from secfwt_jax.tuning.base import (
    SizedByParams,
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


@dataclasses.dataclass(frozen=True)
class CMABase(SizedByParams):
    """create/init/ask of a CMA-ES variant; a subclass sets ``separable``, ``State`` (its state
    pytree class), ``initial_covariance`` (the covariance fields of the first state) and
    ``sample_steps`` (y ~ N(0, C) from standard normal u), and writes ``tell`` from the helpers
    below (``recombine``, ``step_size_and_paths``, ``active_weights``, ``covariance_decay``)."""

    params: CMAESParams
    separable: ClassVar[bool] = False
    State: ClassVar[type] = None

    @classmethod
    def create(cls, dim: int, popsize: int | None = None, sigma0: float = 1.0, **kw):
        """``cls(CMAESParams.default(dim, popsize, sigma0, separable=cls.separable, **kw))``."""
        return cls(CMAESParams.default(dim, popsize, sigma0, separable=cls.separable, **kw))

    def initial_covariance(self, d: int) -> dict[str, jax.Array]:
        raise NotImplementedError

    def sample_steps(self, state, u: jax.Array) -> jax.Array:
        raise NotImplementedError

    def init(self, key: jax.Array, x0: jax.Array):
        """Initial state: mean ``x0 (dim,)``, step size ``sigma0``, C = I, zero paths."""
        d = self.dim
        x0 = check_x0(x0, d)
        return self.State(
            key=raw_key(key),
            mean=x0,
            sigma=jnp.asarray(self.params.sigma0, jnp.float32),
            p_sigma=jnp.zeros((d,), jnp.float32),
            p_c=jnp.zeros((d,), jnp.float32),
            generation=jnp.zeros((), jnp.int32),
            best_x=x0,
            best_f=jnp.asarray(jnp.inf, jnp.float32),
            **self.initial_covariance(d),
        )

    def ask(self, state) -> tuple[jax.Array, Any]:
        """Sample ``popsize`` candidates ``z (popsize, dim)`` ~ N(mean, sigma^2 C)."""
        key, sub = jax.random.split(state.key)
        u = jax.random.normal(sub, (self.popsize, self.dim), jnp.float32)  # eq. (38)
        z = state.mean + state.sigma * self.sample_steps(state, u)  # eqs. (39), (40)
        return z, state.replace(key=key, **self.kept_draws(u, z))

    def kept_draws(self, u: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
        """State fields that ask sets from its draws ``u`` and candidates ``z`` besides the key
        (none here; the Cholesky variant keeps both for tell)."""
        return {}


def recombine(p: CMAESParams, state, z: jax.Array, fitness: jax.Array):
    """The first steps of tell: checks, ranking and the new mean.

    Returns ``(z (P, d), fitness (P,) rankable, w (P,) weights, y (P, d) sorted steps
    y_{i:lambda}, y_w (d,) = <y>_w, mean (d,))``. NaN fitness ranks worst; the steps are
    recomputed as ``(z - mean) / sigma``, as pycma does.
    """
    z, fitness = check_told(z, fitness, p.popsize, p.dim)
    fitness = rankable(fitness)
    w = jnp.asarray(p.weights, jnp.float32)
    y = (z - state.mean) / state.sigma  # y_k = (x_k - m) / sigma ~ N(0, C)
    y = y[jnp.argsort(fitness)]  # y_{i:lambda}; stable: ties keep their sampling order
    # eq. (41): <y>_w = sum_{i<=mu} w_i y_{i:lambda} (positive weights only)
    y_w = mm(w[: p.mu], y[: p.mu])
    mean = state.mean + p.c_m * state.sigma * y_w  # eq. (42)
    return z, fitness, w, y, y_w, mean


def step_size_and_paths(p: CMAESParams, state, y_w: jax.Array, white_y_w: jax.Array):
    """eqs. (43)-(45) from ``y_w = <y>_w`` and ``white_y_w = C^{-1/2} <y>_w`` (d,).

    Returns ``(p_sigma (d,), sigma (), p_c (d,), h_sigma ())``.
    """
    n = p.dim
    # eq. (43): p_sigma <- (1 - c_s) p_sigma + sqrt(c_s (2 - c_s) mu_eff) C^{-1/2} <y>_w
    p_sigma = (1 - p.c_sigma) * state.p_sigma + math.sqrt(
        p.c_sigma * (2 - p.c_sigma) * p.mu_eff
    ) * white_y_w
    norm_ps = jnp.linalg.norm(p_sigma)
    # eq. (44): sigma <- sigma exp(c_s / d_s (||p_sigma|| / E||N(0,I)|| - 1))
    sigma = state.sigma * jnp.exp((p.c_sigma / p.d_sigma) * (norm_ps / p.chi_n - 1))

    # h_sigma (App. A, below eq. (47)): stall the rank-one update while ||p_sigma|| is long
    gen = (state.generation + 1).astype(jnp.float32)
    h_sigma = (
        norm_ps / jnp.sqrt(1 - (1 - p.c_sigma) ** (2 * gen))
        < (1.4 + 2 / (n + 1)) * p.chi_n
    ).astype(jnp.float32)
    # eq. (45): p_c <- (1 - c_c) p_c + h_sigma sqrt(c_c (2 - c_c) mu_eff) <y>_w
    p_c = (1 - p.c_c) * state.p_c + h_sigma * math.sqrt(
        p.c_c * (2 - p.c_c) * p.mu_eff
    ) * y_w
    return p_sigma, sigma, p_c, h_sigma


def active_weights(p: CMAESParams, w: jax.Array, mahal2: jax.Array) -> jax.Array:
    """eq. (46): w_i^o = w_i * (1 if w_i >= 0 else n / ||C^{-1/2} y_{i:lambda}||^2), from
    ``mahal2 (P,)`` = the squared Mahalanobis norms of the sorted steps."""
    return w * jnp.where(w >= 0, 1.0, p.dim / jnp.maximum(mahal2, 1e-30))


def covariance_decay(p: CMAESParams, h_sigma: jax.Array) -> jax.Array:
    """The factor of the old C in eq. (47): ``1 + c_1 delta(h_sigma) - c_1 - c_mu sum w_j``,
    with delta(h_sigma) = (1 - h_sigma) c_c (2 - c_c) <= 1 (App. A, below eq. (47))."""
    delta_h = (1 - h_sigma) * p.c_c * (2 - p.c_c)
    return 1 + p.c_1 * delta_h - p.c_1 - p.c_mu * float(sum(p.weights))


def full_covariance(p: CMAESParams, state, h_sigma: jax.Array, p_c: jax.Array, y: jax.Array,
                    w_o: jax.Array) -> jax.Array:
    """eq. (47) for a full ``state.C (d, d)``: C <- (1 + c_1 delta(h) - c_1 - c_mu sum w_j) C
    + c_1 p_c p_c^T + c_mu sum_i w_i^o y_{i:lambda} y_{i:lambda}^T, from the sorted steps
    ``y (P, d)`` and the active weights ``w_o (P,)``."""
    return (
        covariance_decay(p, h_sigma) * state.C
        + p.c_1 * jnp.outer(p_c, p_c)
        + p.c_mu * mm(y.T * w_o, y)
    )


def lazy_factorise(p: CMAESParams, state, C: jax.Array, factorise, kept: tuple):
    """Lazy factorisation of a full C (tutorial Sec. B.2; pycma's ``update_now``): the O(n^3)
    ``factorise(C) -> (C, *factors)`` runs once ``eigen_interval`` tells have passed since the
    last one, else ``(C, *kept)``; lax.cond executes only the taken branch (under vmap it
    becomes a select and computes both). Returns ``(C, *factors), eigen_generation``."""
    g = state.generation
    due = g + 1 - state.eigen_generation >= p.eigen_interval
    out = jax.lax.cond(due, factorise, lambda C: (C, *kept), C)
    return out, jnp.where(due, g + 1, state.eigen_generation)


def finish(state, z: jax.Array, fitness: jax.Array, **updated):
    """The last step of tell: the best point so far and the generation count, with the
    variant's ``updated`` fields."""
    best_x, best_f = update_best(state.best_x, state.best_f, z, fitness)
    return state.replace(generation=state.generation + 1, best_x=best_x, best_f=best_f,
                         **updated)
