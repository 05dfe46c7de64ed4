"""The model's one extension point: `ops`, the object through which a computation that needs
help from outside the network (an MPC backend's opening, per-call secret masks) reaches it.

The model (model.py, layers.py) is a plain network: it knows no backend, reveals nothing and
takes no masks. Its entry points (`RobertaMLM(config, ops)`, `verbalizer_fn(..., ops=)`,
`similarity.similarity_fn(..., ops=)`) take an ops object, by default `PLAIN_OPS` (the
network's own functions). The compiled functions they return take, after the model's own
arguments, the ops' per-call inputs (`*call_inputs`), and bind them with `ops.bind(...)`.
docs/backend.md ("Model ops") describes it; secfwt_jax.backend.masked_trig.model_ops picks the
ops a backend needs.

An ops object has two methods:
- `bind(*call_inputs) -> ops`: the ops of one call, given the extra arguments of that call
  (checked: a wrong count raises ValueError).
- `rfa_cos_sin(config, layer_index) -> None | f`: how layer `layer_index`'s random-feature
  attention takes cos and sin: None for the built-in functions, else f(turns) -> (cos, sin)
  of angles given in turns (x / 2 pi), shape (2, B, heads, S, M). Raises ValueError when the
  ops do not fit the config (e.g. config.rfa_trig="masked" with plain ops).

Today's only non-plain ops are `MaskedTrigOps`, SecFwT's one-round masked trigonometry
(secure_trig.py). A new MPC-only hook adds a method here and a call in the model, instead of a
new model parameter. Pure JAX, no MPC library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .secure_trig import masked_cos_sin

NEEDS_MASKS = (
    "attention 'rfa' with rfa_trig 'masked' needs trig_masks: build the model with "
    "ops=MaskedTrigOps(reveal) (secfwt_jax.backend.masked_trig.model_ops(backend, config) "
    "gives the backend's) and pass one mask pytree per layer to every call "
    "(secfwt_jax.secure_trig.model_trig_mask_shape)"
)


class ModelOps(Protocol):
    """What the model asks of its ops (see the module docstring)."""

    def bind(self, *call_inputs: Any) -> ModelOps: ...

    def rfa_cos_sin(self, config, layer_index: int) -> Callable | None: ...


class PlainOps:
    """The network's own functions; no per-call inputs."""

    def bind(self, *call_inputs) -> PlainOps:
        if call_inputs:
            raise ValueError(
                f"{len(call_inputs)} per-call inputs (e.g. trig_masks) given to a model built "
                "with the plain ops, which take none; build it with the ops that use them "
                "(secfwt_jax.backend.masked_trig.model_ops)"
            )
        return self

    def rfa_cos_sin(self, config, layer_index: int) -> None:
        if config.masked_trig:
            raise ValueError(NEEDS_MASKS)
        return None

    def __repr__(self):
        return "PLAIN_OPS"


PLAIN_OPS = PlainOps()


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (flax hashes modules)
class MaskedTrigOps:
    """rfa's cos and sin by the masked one-round trigonometry (secure_trig.masked_cos_sin).

    reveal: opens a value to the compute servers inside the program (an MPC backend's
    `open_to_servers()`); None: identity (a floating-point run with identity masks).
    masks: set by `bind(masks)` for one call: a sequence with one mask pytree per layer, for
    shape (2, B, heads, S, num_features) (secure_trig.model_trig_mask_shape).
    """

    reveal: Callable | None = None
    masks: Sequence | None = None

    def bind(self, *call_inputs) -> MaskedTrigOps:
        if len(call_inputs) != 1:
            raise ValueError(
                f"the masked-trig ops take one per-call input (trig_masks: a list with one mask "
                f"pytree per layer), got {len(call_inputs)}; {NEEDS_MASKS}"
            )
        return dataclasses.replace(self, masks=call_inputs[0])

    def rfa_cos_sin(self, config, layer_index: int) -> Callable:
        if not config.masked_trig:
            raise ValueError(
                f"trig_masks given but attention={config.attention!r}, "
                f"rfa_trig={config.rfa_trig!r}; they are used only with attention 'rfa' and "
                "rfa_trig 'masked' (build the model with the plain ops)"
            )
        if self.masks is None:
            raise ValueError(NEEDS_MASKS)
        if len(self.masks) != config.num_hidden_layers:
            raise ValueError(
                f"trig_masks holds {len(self.masks)} entries; expected one per layer "
                f"({config.num_hidden_layers})"
            )
        masks, reveal = self.masks[layer_index], self.reveal
        return lambda turns: masked_cos_sin(turns, masks, reveal)
