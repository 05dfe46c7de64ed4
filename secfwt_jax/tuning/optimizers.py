"""Build a gradient-free optimizer by name: the one entry point a tuning loop needs."""

from __future__ import annotations

from secfwt_jax.tuning.base import Optimizer
from secfwt_jax.tuning.cholesky_cmaes import CholeskyCMAES
from secfwt_jax.tuning.cmaes import CMAES
from secfwt_jax.tuning.sep_cmaes import SepCMAES
from secfwt_jax.tuning.zo import ZOSGD

OPTIMIZERS = {"cmaes": CMAES, "sepcmaes": SepCMAES, "zo": ZOSGD, "cmaes_cholesky": CholeskyCMAES}

# the search scale each optimizer starts from when sigma0 is not given
DEFAULT_SIGMA0 = {"cmaes": 1.0, "sepcmaes": 1.0, "zo": 1e-2, "cmaes_cholesky": 1.0}


def make_optimizer(
    name: str, dim: int, popsize: int | None = None, sigma0: float | None = None, **kw
) -> Optimizer:
    """Return the optimizer ``name`` for a ``dim``-dimensional search space.

    name: ``cmaes`` (full covariance, pycma's algorithm), ``cmaes_cholesky`` (the same with a
    Cholesky factor of C for sampling and whitening: faster at large ``dim``, not rotation
    invariant; see tuning/cholesky_cmaes.py), ``sepcmaes`` (diagonal) or ``zo`` (two-point
    zeroth-order SGD). popsize: candidates per generation; ``None`` gives
    ``4 + floor(3 ln dim)`` (rounded up to even for ``zo``). sigma0: the search scale: the
    initial step size of (sep-)CMA-ES, the perturbation scale ``mu`` of ZO; ``None`` gives
    ``DEFAULT_SIGMA0[name]``. Other keywords go to the optimizer's parameters
    (the CMA-ES variants: ``active``, ``eig_floor``; the full ones: ``eigen_interval``;
    ``zo``: ``optimizer``, ``learning_rate``, ``momentum``, ``direction``).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; accepted: {', '.join(OPTIMIZERS)}")
    if sigma0 is None:
        sigma0 = DEFAULT_SIGMA0[name]
    return OPTIMIZERS[name].create(dim, popsize=popsize, sigma0=sigma0, **kw)
