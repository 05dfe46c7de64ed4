"""SEMI2K weight caching (backend/spu_cache.py): the cached program gives the same outputs, and
from the second call on it no longer sends the weights' openings; other protocols are refused."""

import warnings

import numpy as np
import pytest

from secfwt_jax.backend import make_backend
from secfwt_jax.backend.common import InsecureDealerWarning
from secfwt_jax.backend.spu_cache import cached_weights_fn


def layer(params, x):
    return (x @ params["w"]) * params["g"]


def test_cached_weights_same_outputs_and_fewer_bytes_from_the_second_call():
    pytest.importorskip("spu")
    rng = np.random.default_rng(0)  # test data, not secret
    params = {"w": (0.1 * rng.standard_normal((64, 64))).astype(np.float32),
              "g": rng.standard_normal(64).astype(np.float32)}
    x = rng.standard_normal((2, 64)).astype(np.float32)
    ref = layer(params, x)
    costs = {}
    for cache in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureDealerWarning)
            be = make_backend("semi2k", dealer="trusted_first_party")
        with be:
            w = be.put(params)
            fn = be.compile(cached_weights_fn(layer, "semi2k") if cache else layer)
            costs[cache] = []
            for _ in range(2):
                out, cost = fn(w, x)
                np.testing.assert_allclose(np.asarray(out), ref, atol=1e-2)
                costs[cache].append(cost.bytes_total)
    plain, cached = costs[False], costs[True]
    assert plain[0] == plain[1] == cached[0]  # the first cached call opens the weights too
    # later calls open only x - a: the 64 x 64 weights' opening is no longer sent
    assert cached[1] < plain[1] - 2 * 64 * 64 * 8


def test_cached_weights_refuses_other_protocols():
    with pytest.raises(ValueError, match="semi2k"):
        cached_weights_fn(layer, "aby3")
