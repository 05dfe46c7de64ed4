"""The Flax RoBERTa against Hugging Face's, soft prompts, the verbalizer head, the loader."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from secfwt_jax import load_pretrained
from secfwt_jax.config import ModelConfig
from secfwt_jax.loading import params_from_state_dict, read_state_dict, resolve_checkpoint_dir
from secfwt_jax.model import (
    RobertaMLM,
    embed_fn,
    init_params,
    insert_prompt,
    position_ids,
    verbalizer_fn,
)

TINY_HF = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1,
    bos_token_id=0, eos_token_id=2, hidden_act="gelu", layer_norm_eps=1e-5,
)


def flax_to_pytorch_names(flax_params) -> dict[str, np.ndarray]:
    """transformers' FlaxRobertaForMaskedLM params -> the PyTorch state-dict naming."""
    flat = {}

    def walk(tree, prefix):
        for k, v in tree.items():
            if isinstance(v, dict):
                walk(v, prefix + [k])
            else:
                flat[".".join(prefix + [k])] = np.asarray(v)

    walk(flax_params, [])
    out = {}
    for name, value in flat.items():
        if name.endswith(".kernel"):
            out[name[: -len("kernel")] + "weight"] = value.T.copy()
        elif name.endswith(".embedding"):
            out[name[: -len("embedding")] + "weight"] = value
        elif name.endswith(".scale"):
            out[name[: -len("scale")] + "weight"] = value
        else:
            out[name] = value
    return out


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A random Hugging Face RoBERTa MLM written as config.json + PyTorch-named safetensors."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "FlaxRobertaForMaskedLM"):
        pytest.skip("this transformers has no Flax models (the oracle needs transformers < 5)")
    config = transformers.RobertaConfig(**TINY_HF)
    oracle = transformers.FlaxRobertaForMaskedLM(config, seed=3)
    # Random, non-trivial LayerNorm and bias values so that a mapping mistake shows up.
    rng = np.random.default_rng(0)
    oracle.params = jax.tree_util.tree_map(
        lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape).astype(np.float32),
        oracle.params,
    )
    directory = tmp_path_factory.mktemp("ckpt")
    config.save_pretrained(directory)
    state = flax_to_pytorch_names(oracle.params)
    state["lm_head.decoder.weight"] = state["roberta.embeddings.word_embeddings.weight"]
    save_file(state, str(directory / "model.safetensors"))
    return directory, oracle


def padded_batch():
    ids = np.array(
        [[0, 5, 17, 33, 119, 2, 1, 1, 1], [0, 8, 9, 10, 11, 12, 13, 119, 2]], dtype=np.int32
    )
    return ids, (ids != 1).astype(np.int32)


def test_matches_hugging_face_logits_with_padding(hf_checkpoint):
    directory, oracle = hf_checkpoint
    model, params = load_pretrained(str(directory))
    ids, mask = padded_batch()
    ours = model.apply({"params": params}, ids, mask)
    theirs = oracle(input_ids=ids, attention_mask=mask).logits
    assert ours.shape == theirs.shape == (2, 9, TINY_HF["vocab_size"])
    assert float(jnp.max(jnp.abs(ours - theirs))) <= 1e-4


def test_loader_reads_hub_style_config_fields(hf_checkpoint):
    directory, _ = hf_checkpoint
    model, _ = load_pretrained(str(directory), attention="rfa", num_features=8)
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == 120
    assert model.config.attention == "rfa" and model.config.num_features == 8
    assert model.config.mask_token_id == 119


def _state(hf_checkpoint):
    directory, _ = hf_checkpoint
    return read_state_dict(str(directory)), ModelConfig.from_json(directory / "config.json")


def test_loader_names_missing_tensors(hf_checkpoint):
    state, config = _state(hf_checkpoint)
    del state["roberta.encoder.layer.1.output.dense.weight"]
    missing = r"missing tensors: roberta\.encoder\.layer\.1\.output\.dense\.weight"
    with pytest.raises(ValueError, match=missing):
        params_from_state_dict(state, config)


def test_loader_names_mismatched_shapes(hf_checkpoint):
    state, config = _state(hf_checkpoint)
    state["lm_head.dense.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match=r"lm_head\.dense\.bias: checkpoint \(7,\), model \(32,\)"):
        params_from_state_dict(state, config)


def test_loader_names_unknown_tensors(hf_checkpoint):
    state, config = _state(hf_checkpoint)
    state["classifier.dense.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"unknown tensors: classifier\.dense\.weight"):
        params_from_state_dict(state, config)


def test_loader_rejects_untied_decoder(hf_checkpoint):
    state, config = _state(hf_checkpoint)
    state["lm_head.decoder.weight"] = state["lm_head.decoder.weight"] + 1.0
    with pytest.raises(ValueError, match="untied decoder"):
        params_from_state_dict(state, config)


def test_loader_rejects_a_checkpoint_with_more_layers_than_the_config(hf_checkpoint):
    state, _ = _state(hf_checkpoint)
    one_layer = ModelConfig.from_hf_dict({**TINY_HF, "num_hidden_layers": 1})
    with pytest.raises(ValueError, match=r"unknown tensors: roberta\.encoder\.layer\.1\."):
        params_from_state_dict(state, one_layer)


def test_loader_accepts_legacy_gamma_beta_names(hf_checkpoint):
    state, config = _state(hf_checkpoint)
    state["roberta.embeddings.LayerNorm.gamma"] = state.pop("roberta.embeddings.LayerNorm.weight")
    state["roberta.embeddings.LayerNorm.beta"] = state.pop("roberta.embeddings.LayerNorm.bias")
    params = params_from_state_dict(state, config)
    assert params["embeddings_layer_norm"]["scale"].shape == (32,)


def test_missing_directory_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_pretrained(str(tmp_path / "does-not-exist"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**TINY_HF, "model_type": "roberta"}))
    with pytest.raises(FileNotFoundError, match="model.safetensors, pytorch_model.bin"):
        load_pretrained(str(tmp_path))


def test_unreachable_hub_name_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not fetch 'nobody/no-such-roberta'"):
        resolve_checkpoint_dir("nobody/no-such-roberta")


def test_unsupported_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model_type 'gpt2'"):
        ModelConfig.from_hf_dict({**TINY_HF, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="unsupported hidden_act 'relu'"):
        ModelConfig.from_hf_dict({**TINY_HF, "hidden_act": "relu"})


# --- soft prompts and the verbalizer head -------------------------------------------------------

CFG = ModelConfig.preset("tiny")


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=1)


def batch():
    ids = np.array([[0, 5, 6, 999, 2, 1, 1], [0, 7, 8, 9, 10, 999, 2]], dtype=np.int32)
    mask = (ids != 1).astype(np.int32)
    return ids, mask, (ids == CFG.mask_token_id).astype(np.float32)


def test_cat_with_zero_length_prompt_equals_no_prompt(params):
    ids, mask, _ = batch()
    model = RobertaMLM(CFG)
    plain = model.apply({"params": params}, ids, mask)
    empty = model.apply({"params": params}, ids, mask, jnp.zeros((2, 0, CFG.hidden_size)))
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(empty))


def test_add_with_zero_prompt_equals_no_prompt(params):
    ids, mask, _ = batch()
    model = RobertaMLM(CFG)
    plain = model.apply({"params": params}, ids, mask)
    zero = model.apply({"params": params}, ids, mask, jnp.zeros((2, 3, CFG.hidden_size)), "add")
    np.testing.assert_allclose(np.asarray(plain), np.asarray(zero), atol=1e-6)


def test_cat_prompt_lengthens_the_sequence_and_shifts_text_positions():
    mask = np.array([[1, 1, 1, 0]])
    np.testing.assert_array_equal(position_ids(mask, CFG, 0), [[2, 3, 4, 1]])
    np.testing.assert_array_equal(position_ids(mask, CFG, 3), [[2, 6, 7, 1]])
    x, m = insert_prompt(
        jnp.zeros((1, 4, 2)), jnp.asarray(mask), jnp.ones((1, 3, 2)), "cat_pre_ln",
        jnp.zeros((3, 2)),
    )
    assert x.shape == (1, 7, 2)
    np.testing.assert_array_equal(np.asarray(m), [[1, 1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(np.asarray(x[0, :, 0]), [0, 1, 1, 1, 0, 0, 0])


def test_cat_prompt_equals_prompt_tokens_whose_embeddings_are_the_prompt(params):
    """Inserting vectors that happen to be word embeddings of tokens t equals inserting t."""
    ids, mask, _ = batch()
    model = RobertaMLM(CFG)
    tokens = np.array([40, 41, 42])
    prompt = params["word_embeddings"][tokens] + params["token_type_embeddings"][0]
    with_prompt = model.apply({"params": params}, ids, mask, jnp.stack([prompt, prompt]))
    spliced = np.concatenate([ids[:, :1], np.stack([tokens, tokens]), ids[:, 1:]], axis=1)
    direct = model.apply({"params": params}, spliced, (spliced != 1).astype(np.int32))
    np.testing.assert_allclose(np.asarray(with_prompt), np.asarray(direct), atol=1e-5)


def test_verbalizer_head_equals_sliced_full_logits(params):
    ids, mask, onehot = batch()
    words = [5, 17, 400]
    rng = np.random.default_rng(0)
    prompts = rng.standard_normal((3, 4, CFG.hidden_size)).astype(np.float32) * 0.1
    embeds = embed_fn(CFG, 4)(params, ids, position_ids(mask, CFG, 4))
    got = verbalizer_fn(CFG, words)(params, embeds, mask, onehot, prompts)
    assert got.shape == (3, 2, 3)
    model = RobertaMLM(CFG)
    mask_pos = onehot.argmax(1) + 4  # the prompt sits before the text
    for p in range(3):
        full = model.apply({"params": params}, ids, mask, jnp.stack([prompts[p]] * 2))
        want = np.asarray(full)[np.arange(2), mask_pos][:, words]
        np.testing.assert_allclose(np.asarray(got[p]), want, atol=1e-5)


def test_one_hot_embedding_lookup_equals_gather(params):
    ids, mask, _ = batch()
    pos = position_ids(mask, CFG, 2)
    f = embed_fn(CFG, 2)
    gathered = f(params, ids, pos)
    onehot = f(
        params,
        jax.nn.one_hot(ids, CFG.vocab_size),
        jax.nn.one_hot(pos, CFG.max_position_embeddings),
    )
    np.testing.assert_allclose(np.asarray(gathered), np.asarray(onehot), atol=1e-6)


def test_verbalizer_never_builds_the_vocabulary_projection(params):
    ids, mask, onehot = batch()
    embeds = embed_fn(CFG)(params, ids, position_ids(mask, CFG))
    f = verbalizer_fn(CFG, [5, 6])
    jaxpr = jax.make_jaxpr(f)(params, embeds, mask, onehot, jnp.zeros((2, 0, 32))).jaxpr

    def out_shapes(jpr):
        for eqn in jpr.eqns:
            yield from (v.aval.shape for v in eqn.outvars)
            for sub in eqn.params.values():  # nested calls (pjit, custom_jvp, ...)
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from out_shapes(sub)

    shapes = list(out_shapes(jaxpr))
    assert shapes and not [s for s in shapes if CFG.vocab_size in s]
    # and the check can fail: the full model does produce vocabulary-sized values
    full = jax.make_jaxpr(RobertaMLM(CFG).apply)({"params": params}, ids, mask).jaxpr
    assert [s for s in out_shapes(full) if CFG.vocab_size in s]


def test_sequence_too_long_is_an_error():
    mask = np.ones((1, CFG.max_seq_len - 2), np.int32)
    position_ids(mask, CFG, 2)  # fits exactly
    message = (
        "sequence too long: 129 tokens including 3 prompt tokens; this model allows at most 128"
    )
    with pytest.raises(ValueError, match=message):
        position_ids(mask, CFG, 3)


def test_mismatched_shapes_are_errors(params):
    ids, mask, onehot = batch()
    embeds = embed_fn(CFG)(params, ids, position_ids(mask, CFG))
    f = verbalizer_fn(CFG, [5, 6])
    with pytest.raises(ValueError, match="mismatched shapes"):
        f(params, embeds, mask[:, :3], onehot, jnp.zeros((2, 1, 32)))
    with pytest.raises(ValueError, match="label word ids \\[5000\\] are outside"):
        verbalizer_fn(CFG, [5000])
    accepted = "add, cat, cat_pre_ln, add_pre_ln"
    with pytest.raises(ValueError, match=f"unknown prompt_mode 'middle'; accepted: {accepted}"):
        verbalizer_fn(CFG, [5], "middle")


def test_unknown_variant_names_list_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown attention 'flash'; accepted: softmax"):
        CFG.replace(attention="flash")
    with pytest.raises(ValueError, match="unknown activation 'relu'; accepted: gelu"):
        CFG.replace(activation="relu")
    with pytest.raises(ValueError, match="unknown model preset 'gpt2'|unknown model 'gpt2'"):
        ModelConfig.from_name("gpt2")


def test_presets_have_the_published_shapes():
    base, large = ModelConfig.preset("roberta-base"), ModelConfig.preset("roberta-large")
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads) == (768, 12, 12)
    assert (large.hidden_size, large.num_hidden_layers, large.intermediate_size) == (1024, 24, 4096)
    assert base.max_seq_len == 512 and base.vocab_size == 50265 and base.mask_token_id == 50264


def test_plaintext_model_code_does_not_import_spu():
    import subprocess
    import sys

    code = (
        "import sys, secfwt_jax, secfwt_jax.model, secfwt_jax.loading, secfwt_jax.layers;"
        "print('spu' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
