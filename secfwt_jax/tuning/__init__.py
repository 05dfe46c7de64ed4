"""Forward-only tuning: gradient-free optimizers (ask/tell on state pytrees), BBT's random
projection from z to soft prompts, and exact checkpoints of optimizer states."""

from secfwt_jax.tuning.base import Optimizer, default_popsize
from secfwt_jax.tuning.checkpoint import load_state, save_state
from secfwt_jax.tuning.cholesky_cmaes import CholeskyCMAES, CholeskyCMAESState
from secfwt_jax.tuning.cmaes import CMAES, CMAESParams, CMAESState
from secfwt_jax.tuning.optimizers import DEFAULT_SIGMA0, OPTIMIZERS, make_optimizer
from secfwt_jax.tuning.projection import (
    PROJECTIONS,
    embedding_std,
    make_projection,
    projection_std,
    prompts_from_z,
)
from secfwt_jax.tuning.sep_cmaes import SepCMAES, SepCMAESState
from secfwt_jax.tuning.zo import ZO_DIRECTIONS, ZO_OPTIMIZERS, ZOSGD, ZOParams, ZOState

__all__ = [
    "CMAES",
    "CMAESParams",
    "CMAESState",
    "CholeskyCMAES",
    "CholeskyCMAESState",
    "DEFAULT_SIGMA0",
    "OPTIMIZERS",
    "Optimizer",
    "PROJECTIONS",
    "SepCMAES",
    "SepCMAESState",
    "ZOParams",
    "ZOSGD",
    "ZOState",
    "ZO_DIRECTIONS",
    "ZO_OPTIMIZERS",
    "default_popsize",
    "embedding_std",
    "load_state",
    "make_optimizer",
    "make_projection",
    "projection_std",
    "prompts_from_z",
    "save_state",
]
