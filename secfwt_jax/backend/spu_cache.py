"""SEMI2K weight caching through SPU's experimental make_cached_var (issue 15, item 3).

Under SEMI2K every multiplication by a secret weight opens (weight - Beaver mask) to the
parties. `make_cached_var` asks SPU to keep that mask and its opening in the party runtime's
Beaver cache, keyed by the weight's share, so later multiplications by the same weight (in the
same call and in later calls on the same resident shares, `put` once) reuse the opening instead
of sending it again. The weights do not change between calls, so the reused opening reveals
nothing the first one did not. Measured in experiments/ablate_runtime.py (study=semi2k_cache).

Imports spu (only the backend's SPU modules do), and only when called.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

CACHE_PROTOCOLS = ("semi2k",)


def cached_weights_fn(f: Callable, protocol: str) -> Callable:
    """`f(params, *rest)` with every leaf of `params` passed through SPU's make_cached_var.

    protocol: the backend's name; only "semi2k" (SPU's Beaver cache belongs to SEMI2K's
    multiplication; other protocols are refused with ValueError)."""
    if protocol not in CACHE_PROTOCOLS:
        raise ValueError(f"weight caching is for {CACHE_PROTOCOLS}, not {protocol!r}")
    from spu.experimental import make_cached_var

    def cached(params, *rest):
        return f(jax.tree_util.tree_map(make_cached_var, params), *rest)

    return cached
