"""BBT's random projection from z in R^d to soft prompts (L, H)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secfwt_jax.tuning import embedding_std, make_projection, projection_std, prompts_from_z

D, L, H = 40, 5, 16


def test_projection_has_shape_d_by_prompt_size():
    A = make_projection(jax.random.PRNGKey(0), D, L, H)
    assert A.shape == (D, L * H) and A.dtype == jnp.float32


def test_normal_projection_std_is_embed_std_over_sqrt_d_sigma0():
    d, embed_std, sigma0 = 100, 0.05, 2.0
    A = make_projection(jax.random.PRNGKey(1), d, 50, 40, embed_std=embed_std, sigma0=sigma0)
    expected = embed_std / (math.sqrt(d) * sigma0)
    assert projection_std(d, embed_std, sigma0) == pytest.approx(expected)
    # 200k entries: the sample std is within 0.5% of the true one with overwhelming odds
    assert float(jnp.std(A)) == pytest.approx(expected, rel=0.01)
    assert abs(float(jnp.mean(A))) < 0.01 * expected


def test_normal_projection_gives_prompts_at_embedding_scale():
    """BBT's rationale: z ~ N(0, sigma0^2 I) maps to prompt entries of std embed_std."""
    d, embed_std, sigma0 = 200, 0.1, 0.5
    A = make_projection(jax.random.PRNGKey(2), d, 10, 32, embed_std=embed_std, sigma0=sigma0)
    z = sigma0 * jax.random.normal(jax.random.PRNGKey(3), (500, d))
    prompts = prompts_from_z(z, A, prompt_len=10)
    assert float(jnp.std(prompts)) == pytest.approx(embed_std, rel=0.05)


def test_normal_projection_without_embed_std_has_unit_scale():
    A = make_projection(jax.random.PRNGKey(1), 100, 50, 40)
    assert float(jnp.std(A)) == pytest.approx(1 / math.sqrt(100), rel=0.01)


def test_uniform_projection_is_torch_linear_default_u_pm_one_over_sqrt_d():
    # BBT (bbt.py, random_proj='he') keeps torch.nn.Linear(d, L*H)'s default init:
    # kaiming_uniform(a=sqrt(5)) has bound gain * sqrt(3 / fan_in) = 1 / sqrt(d).
    A = make_projection(jax.random.PRNGKey(4), 100, 50, 40, kind="uniform")
    bound = 1 / math.sqrt(100)
    assert float(A.min()) >= -bound and float(A.max()) <= bound
    assert float(A.max()) > 0.99 * bound and float(A.min()) < -0.99 * bound
    assert float(jnp.std(A)) == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_uniform_pm1_projection_is_u_minus_one_one():
    A = make_projection(jax.random.PRNGKey(4), 100, 50, 40, kind="uniform_pm1")
    assert float(A.min()) >= -1.0 and float(A.max()) <= 1.0
    assert float(jnp.std(A)) == pytest.approx(1 / math.sqrt(3), rel=0.01)


def test_projection_is_a_function_of_the_key():
    a1 = make_projection(jax.random.PRNGKey(5), D, L, H)
    a2 = make_projection(jax.random.PRNGKey(5), D, L, H)
    a3 = make_projection(jax.random.PRNGKey(6), D, L, H)
    assert np.asarray(a1).tobytes() == np.asarray(a2).tobytes()
    assert not np.array_equal(np.asarray(a1), np.asarray(a3))


def test_embedding_std_is_the_std_of_all_entries():
    emb = np.random.default_rng(0).normal(0.3, 0.2, size=(1000, 32)).astype(np.float32)
    assert embedding_std(emb) == pytest.approx(float(np.std(emb.astype(np.float64))))


def test_prompts_from_z_shapes():
    A = make_projection(jax.random.PRNGKey(0), D, L, H)
    z = jax.random.normal(jax.random.PRNGKey(1), (7, D))
    assert prompts_from_z(z, A, prompt_len=L).shape == (7, L, H)
    assert prompts_from_z(z[0], A, prompt_len=L).shape == (L, H)
    assert prompts_from_z(z, A, p0=jnp.zeros((L, H))).shape == (7, L, H)


def test_prompts_from_z_is_z_times_a_token_major():
    A = make_projection(jax.random.PRNGKey(0), D, L, H)
    z = jax.random.normal(jax.random.PRNGKey(1), (3, D))
    prompts = prompts_from_z(z, A, prompt_len=L)
    expected = (np.asarray(z, np.float64) @ np.asarray(A, np.float64)).reshape(3, L, H)
    np.testing.assert_allclose(prompts, expected, rtol=1e-5, atol=1e-6)


def test_prompts_from_z_adds_the_initial_prompt():
    A = make_projection(jax.random.PRNGKey(0), D, L, H)
    p0 = jax.random.normal(jax.random.PRNGKey(2), (L, H))
    z = jax.random.normal(jax.random.PRNGKey(1), (3, D))
    np.testing.assert_allclose(
        prompts_from_z(z, A, p0=p0), prompts_from_z(z, A, prompt_len=L) + p0, rtol=1e-6
    )
    np.testing.assert_array_equal(prompts_from_z(jnp.zeros((2, D)), A, p0=p0), jnp.stack([p0, p0]))


def test_make_projection_rejects_unknown_kind_listing_the_accepted():
    with pytest.raises(ValueError, match="'he'.*normal, uniform"):
        make_projection(jax.random.PRNGKey(0), D, L, H, kind="he")


def test_uniform_projection_refuses_an_embed_std():
    with pytest.raises(ValueError, match="embed_std"):
        make_projection(jax.random.PRNGKey(0), D, L, H, kind="uniform", embed_std=0.1)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({}, "p0 or prompt_len"),
        ({"prompt_len": 3}, "not prompt_len=3"),
        ({"p0": jnp.zeros((L, H + 1))}, "p0 has shape"),
        ({"p0": jnp.zeros((L, H)), "prompt_len": L + 1}, "disagrees"),
    ],
)
def test_prompts_from_z_rejects_inconsistent_shapes(kw, match):
    A = make_projection(jax.random.PRNGKey(0), D, L, H)
    with pytest.raises(ValueError, match=match):
        prompts_from_z(jnp.zeros((2, D)), A, **kw)


def test_prompts_from_z_rejects_z_of_another_dimension():
    A = make_projection(jax.random.PRNGKey(0), D, L, H)
    with pytest.raises(ValueError, match="z must have shape"):
        prompts_from_z(jnp.zeros((2, D + 1)), A, prompt_len=L)
