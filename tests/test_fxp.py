"""Fixed-point emulation of SPU's FM64 arithmetic (secfwt_jax.backend.fxp).

The first part needs no spu: encoding, rounding, overflow, the interpreter's coverage. The
second part compares against SPU itself (spu.utils.simulation, imported inside the tests):
every approximation against REF2K bit for bit, and the tiny model's candidate losses against
REF2K and ABY3, where the emulation must beat plaintext float32.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secfwt_jax.backend.fxp import FxpConfig, PlaintextFxpBackend, fxp_round, fxp_transform
from secfwt_jax.config import ModelConfig
from secfwt_jax.model import embed_fn, init_params, position_ids, verbalizer_fn
from secfwt_jax.tuning.evaluator import PromptEvaluator, candidate_losses

F = 18
ULP = 2.0**-F


def grid(x):
    """Exact (float64) integer multiples of 2^-18 of the values SPU encodes."""
    return np.trunc(np.asarray(x, np.float64) * 2**F) / 2**F


# -- the grid -----------------------------------------------------------------------------


def test_inputs_are_encoded_toward_zero_on_the_grid():
    x = np.array([0.1, -0.1, 1 / 3, -1 / 3, 2.0**-19, -(2.0**-19), 5.75], np.float32)
    out = np.asarray(jax.jit(fxp_transform(lambda v: v))(x), np.float64)
    np.testing.assert_array_equal(out, grid(x))
    assert np.all(out * 2**F == np.round(out * 2**F))


def test_encoding_saturates_at_a_quarter_of_the_ring_and_maps_nan_to_zero():
    x = np.array([1e30, -1e30, np.nan], np.float32)
    out = np.asarray(fxp_round(x), np.float64)
    assert out[0] == pytest.approx(2.0 ** (62 - F), rel=1e-6)
    assert out[1] == -(2.0 ** (62 - F))
    assert out[2] == 0.0


def test_product_is_rounded_half_up_to_the_grid():
    rng = np.random.default_rng(0)
    x, y = (rng.uniform(-3, 3, 1000).astype(np.float32) for _ in range(2))
    out = np.asarray(jax.jit(fxp_transform(jnp.multiply))(x, y), np.float64)
    exact = grid(x) * grid(y)
    np.testing.assert_array_equal(out, np.floor(exact * 2**F + 0.5) / 2**F)


def test_floor_truncation_rounds_products_down():
    x = np.float32(1.5 + 2**-18)
    out = float(fxp_transform(jnp.multiply, truncation="floor")(x, x))
    exact = float(grid(x)) ** 2
    assert out == math.floor(exact * 2**F) / 2**F < exact


def test_matmul_truncates_once_after_the_sum_of_products():
    a = np.full((1, 4), 2.0**-10, np.float32)  # each product 2^-20 rounds to 0 on its own
    b = np.full((4, 1), 2.0**-10, np.float32)
    out = float(jax.jit(fxp_transform(jnp.matmul))(a, b)[0, 0])
    assert out == 4 * 2.0**-20 == 2.0**-18


def test_public_constants_are_encoded_before_use():
    x = np.zeros(2, np.float32)
    out = np.asarray(fxp_transform(lambda v: v + 1e-5)(x), np.float64)
    np.testing.assert_array_equal(out, grid(1e-5))  # trunc(2.62) = 2 ulps
    assert out[0] == 2 * ULP


def test_division_by_a_constant_multiplies_by_the_encoded_reciprocal():
    x = np.array([1.0, 7.5], np.float32)
    out = np.asarray(fxp_transform(lambda v: v / 3.0)(x), np.float64)
    expected = np.floor(grid(x) * grid(np.float32(1 / 3)) * 2**F + 0.5) / 2**F
    np.testing.assert_array_equal(out, expected)


def test_overflowing_product_wraps_around_the_ring():
    x = np.float32(2.0**14)  # x * x = 2^28 >= 2^(63 - 2f) = 2^27
    assert float(fxp_transform(jnp.multiply)(x, x)) == 0.0  # 2^64 = 0 in the ring
    assert np.isnan(float(fxp_transform(jnp.multiply, overflow="nan")(x, x)))


def test_overflow_report_counts_out_of_range_products():
    x = np.array([2.0**14, 1.0, -(2.0**14)], np.float32)
    _, n = jax.jit(fxp_transform(jnp.multiply, report_overflow=True))(x, x)
    assert int(n) == 2


def test_outputs_keep_the_pytree_and_dtypes_of_the_function():
    def f(p, x):
        return {"y": p["w"] * x, "n": jnp.sum(x > 0).astype(jnp.int32)}

    out = jax.jit(fxp_transform(f))({"w": np.float32(0.5)}, np.ones(3, np.float32))
    assert set(out) == {"y", "n"} and out["y"].dtype == jnp.float32 and int(out["n"]) == 3


def test_loop_bodies_are_emulated_like_the_unrolled_program():
    def looped(x):
        return jax.lax.fori_loop(0, 3, lambda i, v: v * v, x)

    def unrolled(x):
        return ((x * x) * (x * x)) * ((x * x) * (x * x))

    x = np.array([1.0001, 0.9993, 1.01], np.float32)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(fxp_transform(looped))(x)),
        np.asarray(jax.jit(fxp_transform(unrolled))(x)),
    )


def test_primitive_without_a_rule_raises_naming_it():
    with pytest.raises(NotImplementedError, match="'atan'"):
        fxp_transform(jnp.arctan)(np.ones(2, np.float32))


def test_bad_settings_raise_naming_the_accepted_ones():
    with pytest.raises(ValueError, match="nearest, floor"):
        FxpConfig(truncation="stochastic")
    with pytest.raises(ValueError, match="FM32, FM64, FM128"):
        FxpConfig(field="FM256")
    with pytest.raises(ValueError, match="fraction_bits 40"):
        FxpConfig(fraction_bits=40)


# -- against SPU ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spu_sim():
    pytest.importorskip("spu")
    import spu.libspu as libspu
    import spu.utils.simulation as spsim

    def run(protocol: str, fn, *args):
        kind, parties = {"ref2k": (libspu.ProtocolKind.REF2K, 1),
                         "aby3": (libspu.ProtocolKind.ABY3, 3)}[protocol]
        sim = spsim.Simulator.simple(parties, kind, libspu.FieldType.FM64)
        return jax.tree_util.tree_map(np.asarray, spsim.sim_jax(sim, fn)(*args))

    return run


_RNG = np.random.default_rng(1)
APPROXIMATIONS = {
    # name: (function, inputs in the range where SPU's approximation is meant to work)
    "exp": (jnp.exp, _RNG.uniform(-12, 3, 16)),
    "log": (jnp.log, np.exp(_RNG.uniform(-6, 8, 16))),
    "reciprocal": (lambda x: 1.0 / x, _RNG.uniform(-50, 50, 16)),
    "division": (lambda x: x / x[::-1], _RNG.uniform(0.1, 5, 16)),
    "rsqrt": (jax.lax.rsqrt, np.exp(_RNG.uniform(-6, 8, 16))),
    "sqrt": (jnp.sqrt, np.exp(_RNG.uniform(-6, 8, 16))),
    "tanh": (jnp.tanh, _RNG.uniform(-6, 6, 16)),
    "logistic": (jax.nn.sigmoid, _RNG.uniform(-8, 8, 16)),
    "sin": (jnp.sin, _RNG.uniform(-10, 10, 16)),
    "cos": (jnp.cos, _RNG.uniform(-10, 10, 16)),
    "erf": (jax.lax.erf, _RNG.uniform(-4, 4, 16)),
    "gelu_erfc": (lambda x: jax.nn.gelu(x, approximate=False), _RNG.uniform(-6, 6, 16)),
    "softmax": (lambda x: jax.nn.softmax(x.reshape(4, 4), -1), _RNG.uniform(-3, 3, 16)),
}


@pytest.mark.parametrize("name", list(APPROXIMATIONS))
def test_approximation_matches_spu_ref2k_bit_for_bit(spu_sim, name):
    fn, x = APPROXIMATIONS[name]
    x = x.astype(np.float32)
    spu_out = np.asarray(spu_sim("ref2k", lambda v: fn(v), x), np.float64)
    emulated = np.asarray(jax.jit(fxp_transform(fn))(x), np.float64)
    plain = np.asarray(fn(x), np.float64)
    print(f"{name}: emulation - SPU max {np.abs(emulated - spu_out).max() / ULP:.1f} ulp, "
          f"float32 - SPU max {np.abs(plain - spu_out).max() / ULP:.1f} ulp")
    np.testing.assert_array_equal(emulated, spu_out)


def _tiny_problem(candidates: int = 5):
    """The tiny model with large random weights, 4 examples of 8 tokens, label words 10/20,
    `candidates` random prompts of 2 vectors."""
    cfg = ModelConfig.preset("tiny", initializer_range=0.3)
    params = init_params(cfg, 0)
    b, s, prompt_len = 4, 8, 2
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size - 1, (b, s)).astype(np.int32)
    ids[:, 0] = cfg.bos_token_id
    mask = np.ones((b, s), np.int32)
    mask[1, 6:] = 0
    mask[3, 5:] = 0
    ids[mask == 0] = cfg.pad_token_id
    mask_onehot = np.zeros((b, s), np.float32)
    mask_onehot[np.arange(b), [3, 4, 2, 3]] = 1
    labels = np.array([0, 1, 1, 0])
    embeds = np.asarray(
        embed_fn(cfg, prompt_len)(params, ids, position_ids(mask, cfg, prompt_len))
    )
    std = float(np.std(np.asarray(params["word_embeddings"])))
    prompts = (rng.normal(size=(candidates, prompt_len, cfg.hidden_size)) * std).astype(np.float32)
    f = verbalizer_fn(cfg, [10, 20])
    batch = types.SimpleNamespace(
        input_ids=ids, attention_mask=mask, mask_onehot=mask_onehot, labels=labels
    )
    return cfg, params, f, (params, embeds, mask, mask_onehot, prompts), labels, batch


@pytest.mark.slow
def test_tiny_model_losses_from_fxp_are_closer_to_spu_than_float32(spu_sim):
    _, _, f, args, labels, _ = _tiny_problem(candidates=5)
    logits = {
        "float32": np.asarray(jax.jit(f)(*args)),
        "fxp": np.asarray(jax.jit(fxp_transform(f))(*args)),
        "ref2k": spu_sim("ref2k", f, *args),
        "aby3": spu_sim("aby3", f, *args),
    }
    loss = {k: np.asarray(candidate_losses(jnp.asarray(v), labels)) for k, v in logits.items()}
    err = {(k, ref): float(np.abs(loss[k] - loss[ref]).max())
           for k in ("float32", "fxp") for ref in ("ref2k", "aby3")}
    for (k, ref), e in err.items():
        print(f"max |loss({k}) - loss({ref})| = {e:.3e}")
    assert err["fxp", "aby3"] < err["float32", "aby3"]
    # REF2K is deterministic, so there the emulation is near-exact (matmul sums in float32).
    assert err["fxp", "ref2k"] < 0.05 * err["float32", "ref2k"]


@pytest.mark.slow
def test_plaintext_fxp_backend_runs_each_evaluator_call_through_the_transform():
    cfg, params, f, args, _, batch = _tiny_problem(candidates=3)
    prompts = args[-1]
    with PlaintextFxpBackend() as backend:
        evaluator = PromptEvaluator(
            backend, cfg, backend.put(params), [10, 20], prompt_len=prompts.shape[1]
        )
        losses, logits = evaluator.losses(evaluator.share_examples(batch), prompts)
    # What the evaluator does on a secure backend: one-hot lookups, then the verbalizer.
    pos = position_ids(batch.attention_mask, cfg, prompts.shape[1])
    tokens = np.eye(cfg.vocab_size, dtype=np.float32)[batch.input_ids]
    positions = np.eye(cfg.max_position_embeddings, dtype=np.float32)[pos]
    embeds = jax.jit(fxp_transform(embed_fn(cfg, prompts.shape[1])))(params, tokens, positions)
    direct = jax.jit(fxp_transform(f))(params, embeds, *args[2:])
    assert losses.shape == (3,) and np.all(np.isfinite(losses))
    np.testing.assert_array_equal(logits, np.asarray(direct))
