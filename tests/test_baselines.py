"""Gradient baselines (secfwt_jax.baselines): the plaintext steps are Adam on the forward-only
method's loss, and the secure steps (one SPU program each) match them in fixed point."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from secfwt_jax.baselines import (
    DEFAULT_EPS,
    DEFAULT_LOSS_SCALE,
    classification_loss,
    fixed_point_adam,
    pack_state,
    prompt_init,
    prompt_step_fn,
    sft_grad_fn,
    sft_init,
    sft_step_fn,
    sft_update_fn,
    split_params,
    unpack_state,
)
from secfwt_jax.config import ModelConfig
from secfwt_jax.model import embed_fn, init_params, position_ids, verbalizer_fn
from secfwt_jax.tuning.evaluator import candidate_losses

LR = 1e-2
WORDS = (5, 7)
B, S, L = 2, 8, 2


@pytest.fixture(scope="module")
def setup():
    cfg = ModelConfig.preset("tiny", initializer_range=0.02)
    params = init_params(cfg, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size - 1, (B, S)).astype(np.int32)
    ids[:, 0], ids[:, 3] = cfg.bos_token_id, cfg.mask_token_id
    mask = np.ones((B, S), np.int32)
    mask_onehot = np.zeros((B, S), np.float32)
    mask_onehot[:, 3] = 1
    embeds = np.asarray(jax.jit(embed_fn(cfg, L))(params, ids, position_ids(mask, cfg, L)))
    labels_onehot = np.eye(2, dtype=np.float32)[[0, 1]]
    prompt = (0.3 * rng.standard_normal((L, cfg.hidden_size))).astype(np.float32)
    return cfg, params, (embeds, mask, mask_onehot, labels_onehot), prompt


def test_classification_loss_is_the_forward_only_ce_loss():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 2)), jnp.float32)
    labels = np.array([0, 1, 1, 0])
    ours = classification_loss(logits, jax.nn.one_hot(labels, 2))
    np.testing.assert_allclose(ours, candidate_losses(logits, labels, "ce"), rtol=1e-6)


def test_fixed_point_adam_on_scaled_gradients_is_optax_adam_in_float():
    g = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(5, 3)) * 1e-2, jnp.float32)}
    ours, theirs = fixed_point_adam(LR), optax.adam(LR, eps=DEFAULT_EPS)
    s1, s2 = ours.init(g), theirs.init(g)
    for _ in range(3):
        scaled = jax.tree_util.tree_map(lambda x: DEFAULT_LOSS_SCALE * x, g)
        u1, s1 = ours.update(scaled, s1, g)
        u2, s2 = theirs.update(g, s2, g)
        np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-5, atol=1e-9)


def test_pack_state_round_trips_and_leaves_no_scalar():
    state = fixed_point_adam(LR).init({"w": jnp.ones(3)})
    packed = pack_state(state)
    assert all(np.ndim(x) >= 1 for x in jax.tree_util.tree_leaves(packed))
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, unpack_state(packed), state)
    )


@pytest.mark.slow
def test_sft_step_is_adam_on_the_verbalizer_loss(setup):
    cfg, params, batch, _ = setup
    opt = fixed_point_adam(LR)
    new, _, loss = jax.jit(sft_step_fn(cfg, WORDS, opt))(params, sft_init(params, opt), *batch)
    f = verbalizer_fn(cfg, WORDS)
    trainable, frozen = split_params(params)

    def ref_loss(t):
        logits = f({**t, **frozen}, batch[0], batch[1], batch[2], jnp.zeros((1, 0, 32)))
        return classification_loss(logits, batch[3])[0]

    value, grads = jax.value_and_grad(ref_loss)(trainable)
    ref_opt = optax.adam(LR, eps=DEFAULT_EPS)
    updates, _ = ref_opt.update(grads, ref_opt.init(trainable), trainable)
    expected = optax.apply_updates(trainable, updates)
    np.testing.assert_allclose(loss, value, rtol=1e-6)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves({**expected, **frozen}), leaves(new)):
        # float32 gradient noise, normalized by Adam
        np.testing.assert_allclose(a, b, atol=1e-2 * LR)


@pytest.mark.slow
def test_sft_step_keeps_the_embedding_tables(setup):
    cfg, params, batch, _ = setup
    opt = fixed_point_adam(LR)
    new, _, _ = jax.jit(sft_step_fn(cfg, WORDS, opt))(params, sft_init(params, opt), *batch)
    for k in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        np.testing.assert_array_equal(new[k], params[k])
    assert not np.allclose(new["head_bias"], params["head_bias"])


@pytest.mark.slow
def test_prompt_step_moves_only_the_prompt_downhill(setup):
    cfg, params, batch, prompt = setup
    opt = fixed_point_adam(LR)
    step = jax.jit(prompt_step_fn(cfg, WORDS, opt))
    state = prompt_init(prompt, opt)
    losses = []
    for _ in range(5):
        prompt, state, loss = step(params, prompt, state, *batch)
        losses.append(float(loss))
    assert losses[-1] < losses[0]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.spu
def test_secure_sft_and_prompt_steps_match_plaintext_under_aby3(setup):
    """One SPU program per step (weights and optimizer state secret and resident).

    Tolerance: the loss within 2e-3, every updated entry within 0.1 x lr of the plaintext
    step (measured: <= 0.04 lr with RoBERTa's initializer range 0.02; broken sqrt, division or
    an unscaled loss gives 0.5 to 5 lr: see secfwt_jax.baselines).
    """
    from secfwt_jax.backend import make_backend

    cfg, params, batch, prompt = setup
    opt = fixed_point_adam(LR)
    sft, pt = sft_step_fn(cfg, WORDS, opt), prompt_step_fn(cfg, WORDS, opt)
    sft_state, pt_state = sft_init(params, opt), prompt_init(prompt, opt)
    plain_sft = jax.jit(sft)(params, sft_state, *batch)
    plain_pt = jax.jit(pt)(params, prompt, pt_state, *batch)
    with make_backend("aby3", timeout_s=120) as be:
        weights = be.put(params, owner="model")
        secure_sft, _ = be.compile(sft)(weights, be.put(sft_state), *batch)
        secure_pt, _ = be.compile(pt)(weights, prompt, be.put(pt_state), *batch)
    for secure, plain in ((secure_sft, plain_sft), (secure_pt, plain_pt)):
        assert abs(float(secure[2]) - float(plain[2])) < 2e-3
        err = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
            jax.tree_util.tree_leaves(secure[0]), jax.tree_util.tree_leaves(plain[0])))
        assert err < 0.1 * LR, err


@pytest.mark.slow
def test_sft_step_is_its_grad_part_then_its_update_part(setup):
    """bench_iteration measures the SFT step's two parts apart (sft_grad, sft_update) where the
    whole step does not fit; together they are exactly the step."""
    cfg, params, batch, _ = setup
    opt = fixed_point_adam(LR)
    state = sft_init(params, opt)
    new, new_state, loss = jax.jit(sft_step_fn(cfg, WORDS, opt))(params, state, *batch)
    grads, loss2 = jax.jit(sft_grad_fn(cfg, WORDS))(params, *batch)
    trainable, frozen = split_params(params)
    new2, new_state2 = jax.jit(sft_update_fn(opt))(trainable, state, grads)
    assert float(loss) == float(loss2)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(new), leaves({**new2, **frozen})):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(leaves(new_state), leaves(new_state2)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(new2["head_bias"], trainable["head_bias"])


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.spu
def test_sft_composed_from_its_parts_from_update_slices_and_from_layers_matches_measured():
    """bench_iteration under aby3, tiny shapes: (a) the update part extrapolated linearly in
    the entries from slices 1/4 and 1/2 of every parameter has the bytes of the whole update
    (measured, divisor 1) within 1%; (b) the SFT step composed as grad part + update part has
    the bytes of the measured one-program step within 1%. Send actions of the extrapolated
    update: those of the larger slice, within 10% of the whole's. (c) The layer composition
    (secfwt_jax.costs.compose_layers, bench_iteration's) cost(N) = cost(1) + (N - 1)(cost(2) -
    cost(1)) of the SFT step is within 10% of the measured 3-layer step in bytes (fot_softmax
    on 2026-11-30 and fot_secfwt on 2026-12-01 passed this check too; left out of CI for time:
    a forward query's layers add up by construction, an SFT step's backward and update are
    what it is for). Time is checked by the benchmark's validation runs
    (results/iteration/validation_*): on this shared 2-core machine one call's wall time varies
    by more than 10%."""
    import os
    import sys

    from omegaconf import OmegaConf

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
    import bench_iteration as bi

    cfg = OmegaConf.create(dict(
        model=dict(name="tiny", initializer_range=0.02), layers=2, compose_from=None,
        seq_len=8, batch=1, population=2, generation="skip", prompt_len=2, num_features=16,
        num_labels=2, learning_rate=1e-2, seed=0, protocols=["aby3"], mode="sim",
        field="FM64", fraction_bits=None, timeout_s=120,
        methods=["sft", "sft_grad", "sft_update"], update_slices=[4, 2, 1]))
    records = bi.run(cfg)
    by = {}
    for r in records:
        by[(r["method"], r["kind"], r.get("slice_divisor"))] = r
    whole = by["sft_update", "measured", 1]
    extrapolated = by["sft_update", "composed", None]
    assert extrapolated["entries"] == whole["entries"] == whole["entries_full"]
    assert by["sft_update", "measured", 4]["entries"] < by["sft_update", "measured", 2]["entries"]
    assert abs(extrapolated["bytes_total"] / whole["bytes_total"] - 1) < 0.01
    assert abs(max(extrapolated["send_actions"]) / max(whole["send_actions"]) - 1) < 0.1
    (check,) = extrapolated["line_checks"]  # the third slice (the whole) against the line
    assert check["entries"] == whole["entries"] and abs(check["bytes_ratio"] - 1) < 0.01
    step, parts = by["sft", "measured", None], by["sft", "composed", None]
    assert parts["composition"].startswith("sft_grad + sft_update")
    assert abs(parts["bytes_total"] / step["bytes_total"] - 1) < 0.01
    grad = by["sft_grad", "measured", None]
    assert 0 < grad["bytes_total"] < step["bytes_total"]
    # (c): the measured 2-layer step above, and the step at 1 and 3 layers
    from secfwt_jax.backend import make_backend
    from secfwt_jax.costs import compose_layers, cost_figures, figures_of

    figs = {2: figures_of(step)}
    for layers in (1, 3):
        with make_backend("aby3", timeout_s=120) as be:
            figs[layers] = cost_figures(bi.measure(cfg, be, "sft", layers)[0][2])
    composed = compose_layers(figs[1], figs[2], 3)
    assert abs(composed["bytes_total"] / figs[3]["bytes_total"] - 1) < 0.1
    assert figs[3]["bytes_total"] > figs[2]["bytes_total"] > figs[1]["bytes_total"]
