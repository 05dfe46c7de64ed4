"""Each layer variant's defining property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secfwt_jax import layers
from secfwt_jax.config import ModelConfig
from secfwt_jax.model import RobertaMLM, init_params


def qkv(seed=0, b=2, h=2, s=12, d=16, scale=0.5):
    rng = np.random.default_rng(seed)
    q, k, v = (scale * rng.standard_normal((b, h, s, d)).astype(np.float32) for _ in range(3))
    mask = np.ones((b, s), np.int32)
    mask[1, 8:] = 0
    return q, k, v, mask


def reference_softmax(q, k, v, mask):
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
    s = jnp.where(mask[:, None, None, :] > 0, s, -jnp.inf)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)


def rel_err(a, b, mask):
    m = mask[:, None, :, None] > 0
    a, b = np.where(m, a, 0), np.where(m, b, 0)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_softmax_equals_jax_softmax_with_masked_keys():
    q, k, v, mask = qkv()
    np.testing.assert_allclose(
        layers.softmax_attention(q, k, v, mask), reference_softmax(q, k, v, mask), atol=1e-6
    )


def test_softmax_is_finite_when_padding_keys_have_huge_scores():
    q, k, v, mask = qkv()
    k[1, :, 8:] = 1e3  # padding keys with enormous logits must not leak or overflow
    out = layers.softmax_attention(q, k, v, mask)
    np.testing.assert_allclose(out, reference_softmax(q, k, v, mask), atol=1e-6)


def test_puma_softmax_is_close_to_softmax():
    q, k, v, mask = qkv(scale=1.0)
    exact = reference_softmax(q, k, v, mask)
    err = rel_err(layers.softmax_puma_attention(q, k, v, mask), exact, mask)
    assert err < 1e-2


def test_exp_taylor_is_accurate_on_puma_range():
    x = np.linspace(-14, 0, 200).astype(np.float32)
    assert np.max(np.abs(layers.exp_taylor(x) - np.exp(x))) < 2e-2


@pytest.mark.parametrize("name", ["rfa", "favor", "2quad", "softmax_puma"])
def test_linear_attentions_ignore_padding(name):
    q, k, v, mask = qkv()
    w = layers.random_features(32, 16, "orthogonal", 0)
    out = layers.attention(name, q, k, v, mask, w=w)
    k2, v2 = k.copy(), v.copy()
    k2[1, :, 8:] += 3.0
    v2[1, :, 8:] -= 5.0
    out2 = layers.attention(name, q, k2, v2, mask, w=w)
    np.testing.assert_allclose(out[:, :, :8], out2[:, :, :8], atol=1e-5)


@pytest.mark.parametrize("kind", ["iid", "orthogonal"])
def test_rfa_error_shrinks_as_features_grow(kind):
    q, k, v, mask = qkv(scale=0.4)
    exact = reference_softmax(q, k, v, mask)
    errs = []
    for m in (8, 64, 512):
        # average over feature seeds: one draw is noisy, the mean error falls like 1/sqrt(M)
        e = [
            rel_err(layers.rfa_attention(q, k, v, mask, layers.random_features(m, 16, kind, s)),
                    exact, mask)
            for s in range(4)
        ]
        errs.append(np.mean(e))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.1


def test_favor_error_shrinks_as_features_grow():
    q, k, v, mask = qkv(scale=0.4)
    exact = reference_softmax(q, k, v, mask)
    errs = [
        np.mean([
            rel_err(layers.favor_attention(q, k, v, mask, layers.random_features(m, 16, "iid", s)),
                    exact, mask)
            for s in range(4)
        ])
        for m in (8, 512)
    ]
    assert errs[0] > errs[1] and errs[1] < 0.1


def test_rfa_with_normalized_qk_uses_the_cosine_kernel():
    q, k, v, mask = qkv(scale=3.0)
    qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
    # exp(cos(q, k)) = softmax logits q_n.k_n * sqrt(d) / sqrt(d): feed q_n * d^(1/4) to softmax
    d4 = q.shape[-1] ** 0.25
    exact = reference_softmax(qn * d4, kn * d4, v, mask)
    w = layers.random_features(2048, 16, "orthogonal", 0)
    assert rel_err(layers.rfa_attention(q, k, v, mask, w, normalize=True), exact, mask) < 0.05


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("trig", ["builtin", "hook"])
def test_rfa_lean_is_the_same_function(normalize, trig):
    """rfa_lean (the keys' scale times the mask per key, |k|^2 from the normalisation's sum)
    computes the default's function: equal in float32 to rounding, padding ignored alike."""
    from secfwt_jax.secure_trig import identity_trig_masks, masked_cos_sin

    q, k, v, mask = qkv(scale=1.5)
    w = layers.random_features(32, 16, "orthogonal", 0)
    cos_sin = None if trig == "builtin" else (
        lambda t: masked_cos_sin(t, identity_trig_masks(t.shape)))
    default = layers.rfa_attention(q, k, v, mask, w, normalize, cos_sin)
    lean = layers.rfa_attention(q, k, v, mask, w, normalize, cos_sin, lean=True)
    np.testing.assert_allclose(lean, default, rtol=1e-5, atol=1e-5)
    k[1, :, 8:] += 3.0  # padding keys
    np.testing.assert_allclose(
        layers.rfa_attention(q, k, v, mask, w, normalize, cos_sin, lean=True)[:, :, :8],
        lean[:, :, :8], atol=1e-5)
    with pytest.raises(ValueError, match="rfa_lean is used by attention 'rfa' only, not by"):
        layers.attention("favor", q, k, v, mask, w=w, rfa_lean=True)
    with pytest.raises(ValueError, match="rfa_lean=True is an option of attention 'rfa', not"):
        ModelConfig.preset("tiny", attention="softmax", rfa_lean=True)


@pytest.mark.spu
def test_rfa_lean_sends_two_products_fewer_under_aby3():
    """Under ABY3 (FM64) rfa_lean with normalised keys saves one secret product of the key
    features' size (B h S 2M elements) and one of the keys' size (B h S d), 52 bytes each
    (resharing and truncation), against three of B h S elements (s r^2 and scale times mask),
    and reveals the default's values."""
    from secfwt_jax.backend import make_backend

    q, k, v, mask = qkv(scale=1.5)
    w = layers.random_features(32, 16, "orthogonal", 0)
    with make_backend("aby3", timeout_s=120) as be:
        shared = be.put({"q": q, "k": k, "v": v, "mask": mask.astype(np.float32)}, owner="data")
        out = {lean: be.compile(lambda a, lean=lean: layers.rfa_attention(
            a["q"], a["k"], a["v"], a["mask"], w, True, lean=lean))(shared)
            for lean in (False, True)}
    (default, default_cost), (lean, lean_cost) = out[False], out[True]
    b, h, s, d = q.shape
    saved = 52 * (b * h * s * 2 * 32 + b * h * s * d) - 3 * 52 * b * h * s
    assert default_cost.bytes_total - lean_cost.bytes_total == saved
    np.testing.assert_allclose(np.asarray(lean), np.asarray(default), atol=2e-3)


def test_two_quad_weights_are_nonnegative_and_sum_to_one():
    q, k, _, mask = qkv()
    eye = np.broadcast_to(np.eye(12, dtype=np.float32), (2, 2, 12, 12))
    p = np.asarray(layers.two_quad_attention(q, k, eye, mask))  # v = I reveals the weights
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert np.abs(p[1, :, :, 8:]).max() == 0


def test_random_features_are_seeded_and_orthogonal_within_a_block():
    a = layers.random_features(20, 8, "orthogonal", 7)
    np.testing.assert_array_equal(a, layers.random_features(20, 8, "orthogonal", 7))
    assert not np.array_equal(a, layers.random_features(20, 8, "orthogonal", 8))
    block = a[:8] / np.linalg.norm(a[:8], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-5)
    assert a.shape == (20, 8) and a.dtype == np.float32


def test_gelu_variants():
    x = np.linspace(-6, 6, 1001).astype(np.float32)
    exact = jax.nn.gelu(x, approximate=False)
    assert np.max(np.abs(layers.activation("gelu_puma")(x) - exact)) < 2e-2
    assert np.max(np.abs(layers.activation("gelu_tanh")(x) - exact)) < 1e-3
    np.testing.assert_allclose(layers.activation("quad")(x), 0.125 * x * x + 0.5 * x + 0.25)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        layers.activation("swish")


def test_gelu_puma_fused_is_gelu_puma():
    """The same segments, polynomials and breakpoints (x == 3 and the other breakpoints
    included), in float32 to rounding."""
    x = np.concatenate([np.linspace(-8, 8, 4001), [-4.0, -1.95, 3.0]]).astype(np.float32)
    np.testing.assert_allclose(layers.gelu_puma_fused(x), layers.gelu_puma(x), rtol=0, atol=2e-6)
    y = x[:4000].reshape(2, 5, 400)  # any shape
    np.testing.assert_allclose(layers.gelu_puma_fused(y), layers.gelu_puma(y), atol=2e-6)


def test_gelu_even_is_within_its_bound_of_gelu_and_closer_than_puma():
    """Max abs error against erf-GeLU over the real line (tails included): 6.8e-3, against
    PUMA's 2.0e-2; continuous enough at +-A that the error there is within the same bound."""
    a = layers.GELU_EVEN_A
    x = np.concatenate([np.linspace(-12, 12, 240001), [-a, a]])
    exact = np.asarray(jax.nn.gelu(x.astype(np.float32), approximate=False), np.float64)
    err = np.abs(np.asarray(layers.gelu_even(x.astype(np.float32)), np.float64) - exact)
    assert 6.0e-3 < err.max() < 6.9e-3
    assert np.abs(np.asarray(layers.gelu_puma(x.astype(np.float32))) - exact).max() > 1.9e-2
    assert np.all(np.asarray(layers.gelu_even(np.float32([-a - 1e-3, -30.0]))) == 0)
    np.testing.assert_array_equal(layers.gelu_even(np.float32([a + 1e-3, 30.0])),
                                  np.float32([a + 1e-3, 30.0]))


@pytest.mark.spu
def test_cheaper_gelus_send_fewer_bytes_under_aby3():
    """Under ABY3 (FM64), per element: PUMA's GeLU 920 bytes; the fused arrangement 780 (two
    truncations instead of seven, the comparisons in one call) and reveals the same values;
    gelu_even 528 (two comparisons in one call, two selects, three powers, one truncation)
    and stays within 1e-2 of erf-GeLU in fixed point."""
    from secfwt_jax.backend import make_backend

    n = 2000
    x = (3 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    with make_backend("aby3", timeout_s=120) as be:
        shared = be.put({"x": x}, owner="data")
        out = {}
        for name in ("gelu_puma", "gelu_puma_fused", "gelu_even"):
            f = layers.activation(name)
            out[name] = be.compile(lambda a, f=f: f(a["x"]))(shared)
    (puma, puma_cost), (fused, fused_cost), (even, even_cost) = out.values()
    assert puma_cost.bytes_total == 920 * n and fused_cost.bytes_total == 780 * n
    assert even_cost.bytes_total == 528 * n
    assert even_cost.send_actions_total <= fused_cost.send_actions_total
    assert fused_cost.send_actions_total < puma_cost.send_actions_total
    np.testing.assert_allclose(np.asarray(fused), layers.gelu_puma(x), atol=5e-3)
    np.testing.assert_allclose(np.asarray(puma), layers.gelu_puma(x), atol=5e-3)
    np.testing.assert_allclose(np.asarray(even), layers.gelu_even(x), atol=5e-3)
    assert np.abs(np.asarray(even) - jax.nn.gelu(x, approximate=False)).max() < 1e-2


def test_layer_norm_matches_the_definition():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    scale, bias = np.arange(5, dtype=np.float32), np.ones(5, np.float32)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * scale + bias
    np.testing.assert_allclose(layers.layer_norm(x, scale, bias, 1e-5), want, atol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "softmax_puma", "rfa", "favor", "2quad"])
@pytest.mark.parametrize("activation", ["gelu", "gelu_puma", "gelu_puma_fused", "gelu_even",
                                        "quad"])
def test_every_variant_runs_in_the_model(attention, activation):
    cfg = ModelConfig.preset("tiny", attention=attention, activation=activation)
    params = init_params(cfg)
    ids = np.array([[0, 5, 6, 999, 2, 1]])
    out = RobertaMLM(cfg).apply({"params": params}, ids, (ids != 1).astype(np.int32))
    assert out.shape == (1, 6, 1000) and bool(jnp.all(jnp.isfinite(out)))


def test_same_seed_same_function_other_seed_other_function():
    ids = np.array([[0, 5, 6, 999, 2]])
    mask = np.ones_like(ids)
    cfg = ModelConfig.preset("tiny", attention="rfa")
    params = init_params(cfg)
    a = RobertaMLM(cfg).apply({"params": params}, ids, mask)
    b = RobertaMLM(cfg).apply({"params": params}, ids, mask)
    c = RobertaMLM(cfg.replace(feature_seed=1)).apply({"params": params}, ids, mask)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
