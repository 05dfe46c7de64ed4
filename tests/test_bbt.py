"""Parity with Black-Box Tuning's reference pipeline (Sun et al. 2022, ICML;
github.com/txsun1997/Black-Box-Tuning: bbt.py, dataloader.py, modeling_roberta.py, metrics.py,
utils.py), written from reading that code, not copied from it.

- Rows: for each of the 7 tasks, real examples from the shared data are encoded by our loader
  and encoder and compared with BBT's construction, which we re-derive here: BBT's dataloader
  formats one string, `tokenizer.decode(range(1000, 1050))` + the task's format string with the
  raw Hugging Face text (DBpedia's stripped, Yelp's escaped newlines replaced), and tokenizes it
  whole with `<s>`/`</s>` (`batch_encode_plus`); `mask_pos` is the index of `<mask>`; the label
  is `encode(word, add_special_tokens=False)[0]` (metrics.py's label_map). Our encoder instead
  tokenizes template pieces and texts separately and writes the placeholder and mask ids
  directly, so the comparison is between two different routes. Literal ids below were read off
  RoBERTa's vocabulary (vocab.json, the same for roberta-base and roberta-large).
- Model: in "add" mode the prompt is added to the placeholder positions after the embedding
  LayerNorm (modeling_roberta.py, RobertaModel.forward: `embedding_output +
  extended_prompt_embedding`, zero at <s> and after position L); in "cat" mode it is
  concatenated in front of the normalised embeddings with no position embedding.
- Model selection: every `eval_every` calls, the candidate of that call on dev, kept when
  strictly better than the best so far (which starts at 0.0) (bbt.py, LMForwardAPI.eval).
"""

from __future__ import annotations

import csv
import os
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from secfwt_jax.config import ModelConfig
from secfwt_jax.model import RobertaMLM, embed_fn, init_params, position_ids, verbalizer_fn
from secfwt_jax.tasks import encode, label_word_ids, load_full_train, load_split, load_tokenizer
from secfwt_jax.tasks.bbt_split import load_bbt_test
from secfwt_jax.tuning.evaluator import check_placeholders
from secfwt_jax.tuning.loop import bbt_dev_calls, select_on_dev

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("SECFWT_SHARED", ROOT.parent / "shared"))
DATA = pathlib.Path(os.environ.get("SECFWT_DATA_DIR") or SHARED / "data")
TOKENIZER = pathlib.Path(
    os.environ.get("SECFWT_TOKENIZER") or SHARED / "tokenizer" / "roberta-base")
L = 50
MASK, BOS, EOS = 50264, 0, 2
ROWS = 40  # real examples compared per task

# BBT's format strings with n_prompt_tokens=50 (dataloader.py, `convert_examples`): the first %s
# is the decoded placeholder string; then the texts.
BBT_FORMAT = {
    "sst2": "%s . %s . It was <mask> .",
    "yelp": "%s . %s . It was <mask> .",
    "agnews": "%s . <mask> News: %s",
    "dbpedia": "%s [ Category: <mask> ] %s",
    "mrpc": "%s . %s ? <mask> , %s",
    "rte": "%s . %s ? <mask> , %s",
    "snli": "%s . %s ? <mask> , %s",
}
# The same without a prompt (n_prompt_tokens=0, BBT's "cat" mode).
BBT_FORMAT_NO_PROMPT = {
    "sst2": "%s . It was <mask> .", "yelp": "%s . It was <mask> .",
    "agnews": "<mask> News: %s", "dbpedia": "[ Category: <mask> ] %s",
    "mrpc": "%s ? <mask> , %s", "rte": "%s ? <mask> , %s", "snli": "%s ? <mask> , %s",
}
# metrics.py label_map words, first BPE token of the bare word (RoBERTa vocab.json):
# bad 10999, great 12338; World 10988, Sports 10554, Business 18562, Tech 14396; DBpedia:
# Athlete -> "A" 250, Transportation -> "Trans" 19163, Village -> "Vill" 38824, Plant -> "Pl"
# 16213, Album -> "Al" 7083 (first pieces), the others whole; No 3084, Yes 9904, Maybe 14541.
BBT_LABEL_IDS = {
    "sst2": (10999, 12338), "yelp": (10999, 12338),
    "agnews": (10988, 10554, 18562, 14396),
    "dbpedia": (21960, 39594, 45862, 250, 37991, 19163, 37500, 42968, 38824, 42820, 16213, 7083,
                35163, 45225),
    "mrpc": (3084, 9904), "rte": (9904, 3084), "snli": (9904, 14541, 3084),
}
# Where each task's rows come from (the files BBT's Hugging Face splits are exported to), the
# raw text columns, and our loader for the same rows.
SOURCES = {
    "sst2": ("sst2/glue_validation_hf_order.tsv", ("sentence",),
             lambda: load_bbt_test("sst2", DATA)),
    "yelp": ("yelp_polarity/k-shot/16-42/train.tsv", ("text",),
             lambda: load_split("yelp", DATA, "train", seed=42)),
    "agnews": ("agnews/test.tsv", ("sentence",), lambda: load_bbt_test("agnews", DATA)),
    "dbpedia": ("dbpedia/k-shot/16-42/train.tsv", ("sentence",),
                lambda: load_split("dbpedia", DATA, "train", seed=42)),
    "mrpc": ("mrpc/hf_train.tsv", ("sentence1", "sentence2"),
             lambda: load_full_train("mrpc", DATA)),
    "rte": ("rte/hf_train.tsv", ("sentence1", "sentence2"), lambda: load_full_train("rte", DATA)),
    "snli": ("snli/hf_test.tsv", ("premise", "hypothesis"), lambda: load_bbt_test("snli", DATA)),
}
TASKS = tuple(BBT_FORMAT)


@pytest.fixture(scope="module")
def roberta():
    if not TOKENIZER.is_dir() or not DATA.is_dir():
        pytest.skip(f"real data/tokenizer not found ({DATA}, {TOKENIZER}; set SECFWT_SHARED)")
    return load_tokenizer(TOKENIZER)


def raw_texts(name: str) -> list[tuple[str, ...]]:
    """The first ROWS rows' text fields as Hugging Face gives them (csv-quoted exports)."""
    path, columns, _ = SOURCES[name]
    with open(DATA / path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[:ROWS]
    return [tuple(row[c] for c in columns) for row in rows]


def bbt_row(tokenizer, name: str, texts: tuple[str, ...], prompt: bool = True) -> list[int]:
    """BBT's input_ids for one example (dataloader.py, convert_examples + convert_to_features)."""
    if name == "yelp":
        texts = tuple(t.replace("\\n", " ") for t in texts)
    if name == "dbpedia":
        texts = tuple(t.strip() for t in texts)
    if prompt:
        placeholder = tokenizer.decode(list(range(1000, 1000 + L)))
        text = BBT_FORMAT[name] % (placeholder, *texts)
    else:
        text = BBT_FORMAT_NO_PROMPT[name] % texts
    return tokenizer(text)["input_ids"]


@pytest.mark.data
@pytest.mark.parametrize("name", TASKS)
def test_rows_equal_bbt_dataloader_rows_on_real_examples(roberta, name):
    examples = SOURCES[name][2]()[:ROWS]
    batch = encode(name, examples, roberta, None, placeholders=L, overlong="drop")
    assert len(batch) == len(examples)  # none of these is over 512 tokens
    for i, texts in enumerate(raw_texts(name)):
        want = bbt_row(roberta, name, texts)
        n = int(batch.attention_mask[i].sum())
        got = batch.input_ids[i, :n].tolist()
        assert got == want, (name, i, texts)
        width = batch.input_ids.shape[1]
        assert batch.input_ids[i, n:].tolist() == [roberta.pad_token_id] * (width - n)
        # placeholder positions 1..50 (after <s>); mask_pos = input_ids.index(mask_token_id)
        assert got[0] == BOS and got[1:1 + L] == list(range(1000, 1000 + L)) and got[-1] == EOS
        assert int(batch.mask_onehot[i].argmax()) == want.index(MASK)
        assert batch.labels[i] == examples[i].label


@pytest.mark.data
@pytest.mark.parametrize("name", TASKS)
def test_rows_without_placeholders_equal_bbt_cat_mode_rows(roberta, name):
    """BBT's "cat" mode loads its data with n_prompt_tokens=0 (bbt.py get_data)."""
    examples = SOURCES[name][2]()[:ROWS]
    batch = encode(name, examples, roberta, None, overlong="drop")
    for i, texts in enumerate(raw_texts(name)):
        n = int(batch.attention_mask[i].sum())
        assert batch.input_ids[i, :n].tolist() == bbt_row(roberta, name, texts, prompt=False)


@pytest.mark.data
def test_hand_derived_row_pieces(roberta):
    """What follows the placeholders, read off the format strings and vocab.json."""
    rows = {}
    for name in TASKS:
        ex = SOURCES[name][2]()[:1]
        b = encode(name, ex, roberta, None, placeholders=L)
        rows[name] = b.input_ids[0, : int(b.attention_mask[0].sum())].tolist()
    for name in ("sst2", "yelp", "agnews", "mrpc", "rte", "snli"):
        assert rows[name][1 + L] == 479  # " ." after the placeholders ("%s . ...")
    # SST-2's first word is space-prefixed after " . "; HF's sentence ends with a space,
    # which BPE keeps as its own "Ġ" (1437) before " ." (479): "... . It was <mask> ." </s>
    assert rows["sst2"][-8:] == [479, 1437, 479, 85, 21, MASK, 479, EOS]
    assert roberta.convert_ids_to_tokens(rows["sst2"][1 + L + 1])[0] == "Ġ"
    assert rows["agnews"][1 + L: 1 + L + 4] == [479, MASK, 491, 35]  # " ." <mask> " News" ":"
    # " [ Category: <mask> ]" right after the placeholders (no " ." in DBpedia's format)
    assert rows["dbpedia"][1 + L: 1 + L + 5] == [646, 11995, 35, MASK, 27779]
    for name in ("mrpc", "rte", "snli"):  # "%s . %s ? <mask> , %s"
        m = rows[name].index(MASK)
        assert rows[name][m - 1: m + 2] == [17487, MASK, 2156]


@pytest.mark.data
@pytest.mark.parametrize("name", TASKS)
def test_label_token_ids_are_bbts(roberta, name):
    assert label_word_ids(name, roberta) == BBT_LABEL_IDS[name]


@pytest.mark.data
def test_spaced_label_tokens_stay_available(roberta):
    assert label_word_ids("sst2", roberta, "spaced") == (1099, 372)  # "Ġbad", "Ġgreat"
    assert label_word_ids("sst2", roberta, "bbt") == (10999, 12338)


@pytest.mark.data
def test_no_truncation_rows_over_512_tokens_are_left_out(roberta):
    from secfwt_jax.tasks import Example

    long = Example("word " * 600, None, 0)
    short = Example("a fine film", None, 1)
    batch = encode("sst2", [long, short], roberta, None, placeholders=L, overlong="drop")
    assert len(batch) == 1 and batch.labels.tolist() == [1]
    assert batch.input_ids.shape[1] == int(batch.attention_mask.sum())  # padded to the longest
    cut = encode("sst2", [long, short], roberta, None, placeholders=L, overlong="truncate")
    assert cut.input_ids.shape[1] == 512 and cut.truncated.tolist() == [True, False]


# ---------------------------------------------------------------------------------------------
# The model: where the prompt enters.

CFG = ModelConfig.preset("tiny", initializer_range=0.3)
P = 3  # prompt length in the model tests


def tiny_rows():
    """Two rows `<s> [3 placeholders] text <mask> </s> <pad>`: placeholders 900..902."""
    ids = np.array([[0, 900, 901, 902, 40, 41, 42, 999, 2, 1],
                    [0, 900, 901, 902, 50, 51, 999, 2, 1, 1]], np.int32)
    return ids, (ids != 1).astype(np.int32), (ids == 999).astype(np.float32)


def layer_norm(x, scale, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


@pytest.fixture(scope="module")
def params():
    return init_params(CFG.replace(mask_token_id=999), seed=3)


def test_add_mode_equals_layernorm_of_embeddings_plus_prompt_at_placeholder_positions(params):
    cfg = CFG.replace(mask_token_id=999)
    ids, mask, _ = tiny_rows()
    prompt = np.random.default_rng(0).standard_normal((2, P, cfg.hidden_size)).astype(np.float32)
    model = RobertaMLM(cfg)
    got = np.asarray(model.apply({"params": params}, ids, mask, jnp.asarray(prompt), "add"))
    # by hand: token + position + type embeddings, LayerNorm, + prompt at positions 1..P
    pos = position_ids(mask, cfg)
    x = (np.asarray(params["word_embeddings"])[ids] + np.asarray(params["position_embeddings"])[pos]
         + np.asarray(params["token_type_embeddings"])[0])
    ln = params["embeddings_layer_norm"]
    x = layer_norm(x, np.asarray(ln["scale"]), np.asarray(ln["bias"]), cfg.layer_norm_eps)
    x[:, 1:1 + P] += prompt
    h = model.apply({"params": params}, jnp.asarray(x), mask, True, method=RobertaMLM.encode)
    want = np.asarray(model.apply({"params": params}, h, method=RobertaMLM.head_transform)
                      @ params["word_embeddings"].T + params["head_bias"])
    np.testing.assert_allclose(got, want, atol=2e-5)
    # a zero prompt leaves the placeholder tokens: the model without a prompt (BBT's start)
    zero = model.apply({"params": params}, ids, mask, jnp.zeros((2, P, cfg.hidden_size)), "add")
    plain = model.apply({"params": params}, ids, mask)
    np.testing.assert_allclose(np.asarray(zero), np.asarray(plain), atol=1e-5)
    # and the prompt's place matters: before the LayerNorm is another function
    pre = model.apply({"params": params}, ids, mask, jnp.asarray(prompt), "add_pre_ln")
    assert np.abs(np.asarray(pre) - got).max() > 1e-2


def test_cat_mode_puts_the_prompt_before_bos_after_layernorm_without_positions(params):
    cfg = CFG.replace(mask_token_id=999)
    ids, mask, _ = tiny_rows()
    prompt = np.random.default_rng(1).standard_normal((2, P, cfg.hidden_size)).astype(np.float32)
    model = RobertaMLM(cfg)
    got = np.asarray(model.apply({"params": params}, ids, mask, jnp.asarray(prompt), "cat"))
    assert got.shape == (2, ids.shape[1] + P, cfg.vocab_size)
    # the text keeps its positions (no shift): position_ids are those of the bare row
    np.testing.assert_array_equal(position_ids(mask, cfg, P, "cat"), position_ids(mask, cfg))
    normed = model.apply({"params": params}, ids, position_ids(mask, cfg),
                         method=RobertaMLM.embed_norm)
    x = jnp.concatenate([jnp.asarray(prompt), normed], axis=1)
    m = np.concatenate([np.ones((2, P), np.int32), mask], axis=1)
    h = model.apply({"params": params}, x, m, True, method=RobertaMLM.encode)
    want = np.asarray(model.apply({"params": params}, h, method=RobertaMLM.head_transform)
                      @ params["word_embeddings"].T + params["head_bias"])
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("mode", ["add", "cat", "add_pre_ln", "cat_pre_ln"])
def test_verbalizer_equals_the_full_model_at_the_mask(params, mode):
    """The evaluator's split (embed_fn once, verbalizer_fn per call) is the full model's
    function in every mode: the LayerNorm sits in embed_fn for BBT's modes."""
    cfg = CFG.replace(mask_token_id=999)
    ids, mask, onehot = tiny_rows()
    words = [5, 17, 400]
    prompts = np.random.default_rng(2).standard_normal((2, P, cfg.hidden_size)).astype(np.float32)
    embeds = embed_fn(cfg, P, mode)(params, ids, position_ids(mask, cfg, P, mode))
    got = np.asarray(verbalizer_fn(cfg, words, mode)(params, embeds, mask, onehot, prompts))
    model = RobertaMLM(cfg)
    shift = P if mode in ("cat", "cat_pre_ln") else 0
    mask_pos = onehot.argmax(1) + shift
    for p in range(2):
        full = model.apply({"params": params}, ids, mask, jnp.stack([prompts[p]] * 2), mode)
        want = np.asarray(full)[np.arange(2), mask_pos][:, words]
        np.testing.assert_allclose(got[p], want, atol=2e-5)


def test_add_mode_refuses_rows_without_placeholders():
    """The earlier "add" added the prompt onto the first L real tokens (text, <mask>)."""
    ids = np.array([[0, 40, 41, 999, 2], [0, 50, 999, 2, 1]])
    onehot = (ids == 999).astype(np.float32)
    with pytest.raises(ValueError, match="placeholder tokens in every row"):
        check_placeholders(ids, onehot, 2, "add")
    ok, _, ok_onehot = tiny_rows()
    check_placeholders(ok, ok_onehot, P, "add")


@pytest.mark.slow
@pytest.mark.spu
def test_secure_add_and_cat_modes_match_plaintext_under_aby3(params):
    """The secure program computes the same function: placeholder embeddings and the
    LayerNorm inside the secure embedding call, the prompt added after it."""
    from secfwt_jax.backend import make_backend
    from secfwt_jax.tasks.encode import Batch
    from secfwt_jax.tuning.evaluator import PromptEvaluator

    cfg = CFG.replace(mask_token_id=999)
    ids, mask, onehot = tiny_rows()
    batch = Batch(ids, mask, onehot, np.array([0, 1], np.int32), np.zeros(2, bool))
    prompts = np.random.default_rng(4).standard_normal((2, P, cfg.hidden_size)).astype(np.float32)
    for mode in ("add", "cat"):
        out = {}
        for name in ("plaintext", "aby3"):
            be = make_backend(name)
            ev = PromptEvaluator(be, cfg, be.put(params, owner="model"), [5, 17], prompt_len=P,
                                 prompt_mode=mode)
            out[name] = ev.logits(ev.share_examples(batch), prompts)
            be.close()
        np.testing.assert_allclose(out["aby3"], out["plaintext"], atol=2e-2)


# ---------------------------------------------------------------------------------------------
# Model selection (bbt.py, LMForwardAPI.eval).


def test_dev_evaluation_falls_on_every_hundredth_call():
    # popsize 20: calls 1..20 in generation 1, ...; call 100 is generation 5's last candidate
    assert [g for g in range(1, 21) if bbt_dev_calls(g, 20, 100)] == [5, 10, 15, 20]
    assert bbt_dev_calls(5, 20, 100) == [19]
    # popsize 7, every 10 calls: generation 2 holds calls 8..14, call 10 is its 3rd candidate
    assert bbt_dev_calls(2, 7, 10) == [2]
    assert bbt_dev_calls(3, 7, 10) == [5]  # calls 15..21: call 20
    assert bbt_dev_calls(1, 6, 3) == [2, 5]


def test_dev_selection_keeps_strictly_greater_metrics_from_zero():
    metrics = [0.0, 0.5, 0.5, 0.75, 0.6, 0.75, 0.8]
    best, kept = None, []
    for i, m in enumerate(metrics):
        if select_on_dev(best, m):
            best = m
            kept.append(i)
    assert kept == [1, 3, 6]  # 0.0 is not > 0.0; ties are not kept


@pytest.mark.slow
def test_tuner_tests_the_candidate_that_dev_selected(params):
    """A scripted run: dev metrics are fed per dev evaluation; the tested z is the candidate
    evaluated at the call whose dev metric was the first strict maximum."""
    from secfwt_jax.backend import make_backend
    from secfwt_jax.tasks.encode import Batch
    from secfwt_jax.tuning.loop import Tuner, TuningConfig

    cfg = CFG.replace(mask_token_id=999)
    ids, mask, onehot = tiny_rows()
    train = Batch(ids, mask, onehot, np.array([0, 1], np.int32), np.zeros(2, bool))
    dev = train.take(np.array([0]))
    tcfg = TuningConfig(popsize=4, intrinsic_dim=3, prompt_len=P, budget=40, eval_every=6,
                        checkpoint_every=0, seed=0)
    tuner = Tuner(tcfg, make_backend("plaintext"), cfg, params, [5, 17], progress=False)
    scripted = iter([0.2, 0.6, 0.4, 0.6, 0.9, 0.9])  # calls 6, 12, 18, 24, 30, 36
    seen, tested = [], []
    original = tuner.evaluate

    def evaluate(example_sets, z):
        if example_sets[0].size == 1:  # the dev set
            metric = next(scripted)
            seen.append((np.asarray(z).copy(), metric))
            return {"accuracy": metric}
        tested.append(np.asarray(z).copy())
        return original(example_sets, z)

    tuner.evaluate = evaluate
    summary = tuner.run(train, dev, train)
    assert len(seen) == 6 and summary["dev_metric"] == 0.9 and summary["selected"] == "dev"
    np.testing.assert_array_equal(np.asarray(summary["best_z"], np.float32), seen[4][0])
    np.testing.assert_array_equal(tested[-1], seen[4][0])  # the test metric is of that z


# ---------------------------------------------------------------------------------------------
# experiments/run.py: the preset and BBT's own split.


def _run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bbt_run", ROOT / "experiments" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.data
def test_data_bbt_draws_bbts_split_from_the_training_set_and_tests_on_hf_validation(roberta):
    from omegaconf import OmegaConf

    from secfwt_jax.tasks import true_few_shot

    cfg = OmegaConf.create(dict(data="bbt", data_dir=str(DATA), overlong="drop",
                                task=dict(name="mrpc", k=16, data_seed=42)))
    got = _run_module().load_examples(cfg, "mrpc", roberta, placeholders=L, limit=512)
    full = load_full_train("mrpc", DATA)  # no MRPC training row is over 512 tokens
    train, dev = true_few_shot(full, 16, 42)
    assert got["train"] == train and got["dev"] == dev
    assert sorted(np.bincount([e.label for e in got["train"]]).tolist()) == [16, 16]
    assert len(got["test"]) == 408 and got["test"] == load_bbt_test("mrpc", DATA)


@pytest.mark.data
@pytest.mark.slow
def test_experiment_bbt_preset_runs_end_to_end(roberta, tmp_path):
    import json
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "experiment=bbt", "task=mrpc",
           "model=tiny", f"data_dir={DATA}", f"tokenizer={TOKENIZER}", "budget=40",
           "eval_every=20", "test_limit=16", "progress=false", f"hydra.run.dir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert (s["prompt_mode"], s["selection"], s["loss"], s["projection"], s["data"]) == (
        "add", "bbt", "hinge", "uniform", "bbt")
    assert (s["prompt_len"], s["intrinsic_dim"], s["popsize"], s["seed"]) == (50, 500, 20, 42)
    assert s["train_examples"] == s["dev_examples"] == 32 and s["test_examples"] == 16
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("dev_call") for x in lines] == [20, 40]
