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


@pytest.mark.spu
def test_gelu_puma_fused_sends_fewer_bytes_under_aby3():
    """Under ABY3 (FM64) the fused arrangement sends 780 instead of 920 bytes per element (two
    truncations instead of seven, the comparisons in one call) and reveals the same values."""
    from secfwt_jax.backend import make_backend

    n = 2000
    x = (3 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    with make_backend("aby3", timeout_s=120) as be:
        shared = be.put({"x": x}, owner="data")
        out = {}
        for name in ("gelu_puma", "gelu_puma_fused"):
            f = layers.activation(name)
            out[name] = be.compile(lambda a, f=f: f(a["x"]))(shared)
    (puma, puma_cost), (fused, fused_cost) = out["gelu_puma"], out["gelu_puma_fused"]
    assert puma_cost.bytes_total == 920 * n and fused_cost.bytes_total == 780 * n
    assert fused_cost.send_actions_total < puma_cost.send_actions_total
    np.testing.assert_allclose(np.asarray(fused), layers.gelu_puma(x), atol=5e-3)
    np.testing.assert_allclose(np.asarray(puma), layers.gelu_puma(x), atol=5e-3)


def test_layer_norm_matches_the_definition():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    scale, bias = np.arange(5, dtype=np.float32), np.ones(5, np.float32)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * scale + bias
    np.testing.assert_allclose(layers.layer_norm(x, scale, bias, 1e-5), want, atol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "softmax_puma", "rfa", "favor", "2quad"])
@pytest.mark.parametrize("activation", ["gelu", "gelu_puma", "gelu_puma_fused", "quad"])
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
