"""The plaintext backend: the same API as the secure one, run with jax.jit on CPU or GPU.

Cost records carry the wall time only (zero bytes, one "party"). Runs on any jax version the
model supports (no spu, no removed jax APIs).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from .base import protocol_capabilities
from .common import CompiledFunction, FlatArgs, Handle, count_put, new_counters, next_uid
from .cost import CallCost, plaintext_cost


class PlaintextBackend:
    """jax.jit backend. `put` moves arrays to the default device once; calls reuse them."""

    name = "plaintext"
    mode = "local"
    field = None
    fraction_bits = None
    n_parties = 1
    capabilities = protocol_capabilities("plaintext")

    def __init__(self):
        self.uid = next_uid()
        self.counters = new_counters()
        self.closed = False

    def put(self, tree, owner: str = "model") -> Handle:
        """Keep `tree` (a pytree of arrays) on the device; returns a Handle for later calls."""
        self._check_open()
        flat = FlatArgs(tree, self.uid)
        if flat.handles:
            raise ValueError("put() takes arrays, not handles")
        flat.data  # noqa: B018 - raises on shape-only leaves
        value = jax.device_put(flat.canonical)
        arrays = jax.tree_util.tree_leaves(value)
        count_put(self.counters, owner, len(arrays), sum(int(a.nbytes) for a in arrays))
        return Handle(self.uid, flat.abstract, owner, value=value)

    def compile(self, f) -> CompiledFunction:
        self._check_open()
        return CompiledFunction(self, f)

    def delete(self, handle: Handle) -> None:
        handle.value = None
        handle.deleted = True

    def _call(self, fn: CompiledFunction, args, reveal: bool):
        self._check_open()
        t0 = time.perf_counter()
        flat = FlatArgs(args, self.uid)
        exe = self._executable(fn, flat)
        data = flat.data
        if data:
            count_put(self.counters, "data", len(data), sum(int(a.nbytes) for a in data))
        actual = jax.tree_util.tree_map(
            lambda x: x.value if isinstance(x, Handle) else x, flat.canonical,
            is_leaf=lambda x: isinstance(x, Handle),
        )
        out = exe(*actual)
        out = jax.block_until_ready(out)
        if reveal:
            out = jax.tree_util.tree_map(np.asarray, jax.device_get(out))
        else:
            abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), out)
            out = Handle(self.uid, abstract, "computed", value=out)
        cost = plaintext_cost(time.perf_counter() - t0)
        self._account(cost)
        return out, cost

    def _executable(self, fn: CompiledFunction, flat: FlatArgs):
        exe = fn.executables.get(flat.key)
        if exe is None:
            exe = jax.jit(fn.f).lower(*flat.abstract).compile()
            fn.executables[flat.key] = exe
            self.counters["compiles"] += 1
        return exe

    def _account(self, cost: CallCost) -> None:
        self.counters["calls"] += 1
        self.counters["wall_s"] += cost.wall_s

    def _check_open(self):
        if self.closed:
            raise RuntimeError("backend 'plaintext' is closed")

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "PlaintextBackend()"
