"""Specification of the task registry, label words, encoding, tokenizer loading and metrics.

Core tests use a tiny byte-level BPE tokenizer written to a temporary directory. Tests marked
`data` use RoBERTa's real tokenizer from SECFWT_TOKENIZER, or by default
<repo>/../shared/tokenizer/roberta-base, and skip when it is absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from secfwt_jax.tasks import (
    Batch,
    Example,
    Task,
    accuracy,
    compute_metrics,
    encode,
    f1,
    get_task,
    label_word_ids,
    load_tokenizer,
    registry,
    task_names,
)
from secfwt_jax.tasks.registry import register_task, template_segments

REPO = Path(__file__).resolve().parents[1]
BBT_TASKS = ("sst2", "yelp", "agnews", "dbpedia", "mrpc", "rte", "snli")


def shared_tokenizer_dir() -> Path:
    return Path(
        os.environ.get("SECFWT_TOKENIZER") or REPO.parent / "shared" / "tokenizer" / "roberta-base"
    )


@pytest.fixture(scope="module")
def roberta():
    path = shared_tokenizer_dir()
    if not path.is_dir():
        pytest.skip(f"real RoBERTa tokenizer not found at {path} (set SECFWT_TOKENIZER)")
    return load_tokenizer(path)


# A tiny RoBERTa-style tokenizer: special tokens, the 256 byte symbols, and whole-word merges
# for the template and label words below (other words split into single bytes).
TINY_WORDS = (
    "Ġbad", "Ġgreat", "ĠIt", "Ġwas", "ĠYes", "ĠNo", "ĠMaybe", "ĠNews", "ĠCategory",
    "World", "Sports", "Business", "Tech",
)


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table (the symbols byte-level BPE uses for the 256 bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(shifted)}
    return [table[b] for b in range(256)]


def write_tiny_tokenizer(directory: Path) -> Path:
    vocab = {tok: i for i, tok in enumerate(("<s>", "<pad>", "</s>", "<unk>"))}
    for symbol in _byte_symbols():
        vocab.setdefault(symbol, len(vocab))
    merges = []
    for word in TINY_WORDS:
        prefix = word[0]
        for ch in word[1:]:
            if f"{prefix} {ch}" not in merges:
                merges.append(f"{prefix} {ch}")
            prefix += ch
            vocab.setdefault(prefix, len(vocab))
    vocab["<mask>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    (directory / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    return directory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    assert len(tok) <= 1000
    return tok


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------
# Registry


# BBT's format strings (dataloader.py, n_prompt_tokens=0) and label words (metrics.py).
BBT = {
    "sst2": ("%s . It was <mask> .", ("bad", "great")),
    "yelp": ("%s . It was <mask> .", ("bad", "great")),
    "agnews": ("<mask> News: %s", ("World", "Sports", "Business", "Tech")),
    "dbpedia": (
        "[ Category: <mask> ] %s",
        ("Company", "Education", "Artist", "Athlete", "Office", "Transportation", "Building",
         "Natural", "Village", "Animal", "Plant", "Album", "Film", "Written"),
    ),
    "mrpc": ("%s ? <mask> , %s", ("No", "Yes")),
    "rte": ("%s ? <mask> , %s", ("Yes", "No")),
    "snli": ("%s ? <mask> , %s", ("Yes", "Maybe", "No")),
}


def bbt_render(fmt: str, *texts: str | None) -> str:
    return fmt % tuple(t for t in texts if t is not None)


def test_registry_holds_the_seven_bbt_tasks():
    assert set(BBT_TASKS) <= set(task_names())


@pytest.mark.parametrize("name", BBT_TASKS)
def test_task_renders_bbt_template(name):
    task = get_task(name)
    b = "Second one." if task.text_fields == ("text_a", "text_b") else None
    assert task.render("First one.", b) == bbt_render(BBT[name][0], "First one.", b)


@pytest.mark.parametrize("name", BBT_TASKS)
def test_task_label_words_are_bbt_words_in_label_id_order(name):
    assert get_task(name).label_words == BBT[name][1]


def test_unknown_task_error_lists_accepted_names():
    with pytest.raises(ValueError, match=r"unknown task 'sst-3'; accepted: sst2, yelp, agnews"):
        get_task("sst-3")


def test_task_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_task("sst2").template = "{text_a} {mask}"


def test_mrpc_reports_f1_then_accuracy_and_other_tasks_accuracy():
    assert get_task("mrpc").metrics == ("f1", "accuracy")
    assert get_task("mrpc").main_metric == "f1"
    assert {get_task(n).metrics for n in BBT_TASKS if n != "mrpc"} == {("accuracy",)}


def test_num_labels_counts_label_words():
    counts = {n: get_task(n).num_labels for n in BBT_TASKS}
    assert counts == {"sst2": 2, "yelp": 2, "agnews": 4, "dbpedia": 14, "mrpc": 2, "rte": 2,
                      "snli": 3}


def test_pair_tasks_have_two_text_fields():
    pairs = {n for n in BBT_TASKS if get_task(n).text_fields == ("text_a", "text_b")}
    assert pairs == {"mrpc", "rte", "snli"}


def test_space_before_mask_follows_the_template():
    assert get_task("sst2").space_before_mask
    assert get_task("dbpedia").space_before_mask
    assert not get_task("agnews").space_before_mask


def test_template_segments_move_the_space_into_the_following_placeholder():
    assert template_segments("{text_a} . It was {mask} .") == (
        ("text_a", ""), ("literal", " . It was"), ("mask", " "), ("literal", " ."),
    )


@pytest.mark.parametrize(
    "template, message",
    [
        ("{text_a} . It was good .", "exactly one {mask}"),
        ("{mask} {text_a} {mask}", "exactly one {mask}"),
        ("{text_a} {mask} {label}", "bad placeholder {label}"),
        ("{text_b} {mask}", "text fields"),
        ("{text_a}. It was {mask}", "separated from the text around it"),
    ],
)
def test_malformed_template_is_rejected(template, message):
    with pytest.raises(ValueError, match=message):
        Task("x", template, ("a", "b"), ("A", "B"))


def test_label_words_and_names_must_have_the_same_length():
    with pytest.raises(ValueError, match="2 label words"):
        Task("x", "{text_a} {mask}", ("a", "b"), ("A", "B", "C"))


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="unknown metric 'auc'; accepted: accuracy, f1"):
        Task("x", "{text_a} {mask}", ("a", "b"), ("A", "B"), metrics=("auc",))


def test_register_task_makes_it_available_and_refuses_a_taken_name(monkeypatch):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    task = Task("toy", "{text_a} {mask}", ("a", "b"), ("A", "B"))
    register_task(task)
    assert get_task("toy") is task
    with pytest.raises(ValueError, match="already registered"):
        register_task(Task("toy", "{mask} {text_a}", ("a", "b"), ("A", "B")))


# ---------------------------------------------------------------------------------------------
# Label words


def test_label_word_ids_take_the_space_prefixed_token_after_a_space(tiny):
    expected = tuple(tiny.convert_tokens_to_ids(["Ġbad", "Ġgreat"]))
    assert label_word_ids("sst2", tiny, "spaced") == expected


def test_label_word_ids_take_the_bare_token_when_mask_starts_the_template(tiny):
    expected = tiny.convert_tokens_to_ids(["World", "Sports", "Business", "Tech"])
    assert label_word_ids("agnews", tiny) == tuple(expected)


def test_multi_token_label_word_raises_naming_word_and_pieces(tiny):
    with pytest.raises(ValueError, match=r"' Company' is 7 tokens \['ĠC', 'o', 'm'"):
        label_word_ids("dbpedia", tiny, "spaced")


@pytest.mark.data
@pytest.mark.parametrize("name", BBT_TASKS)
def test_every_label_word_is_one_roberta_token(roberta, name):
    ids = label_word_ids(name, roberta, "spaced")
    assert len(ids) == get_task(name).num_labels == len(set(ids))


@pytest.mark.data
def test_sst2_label_words_are_roberta_space_bad_and_space_great(roberta):
    assert label_word_ids("sst2", roberta, "spaced") == (1099, 372)
    assert roberta.convert_ids_to_tokens([1099, 372]) == ["Ġbad", "Ġgreat"]


# ---------------------------------------------------------------------------------------------
# Encoding

SST2_ROWS = [Example("a fine film", None, 1), Example("dull", None, 0)]
MRPC_ROWS = [Example("He said so .", "So he said .", 1), Example("No .", "Yes .", 0)]


def test_encode_returns_int32_ids_and_mask_and_float32_onehot_of_max_len(tiny):
    batch = encode("sst2", SST2_ROWS, tiny, max_len=40)
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.mask_onehot.shape
    assert batch.input_ids.shape == (2, 40)
    assert (batch.input_ids.dtype, batch.attention_mask.dtype) == (np.int32, np.int32)
    assert batch.mask_onehot.dtype == np.float32
    assert batch.labels.dtype == np.int32 and batch.labels.tolist() == [1, 0]


def masked_reference(task: Task, tok, ex: Example) -> list[int]:
    """Oracle: tokenize the filled template with the first label word in place of <mask>,
    then mask that token. (Not `tok(task.render(...))`: how a tokenizer splits the string
    "<mask>" from the space before it differs between transformers 4 and 5.)"""
    word = (task.spaced_label_words or task.label_words)[0]
    ids = tok(task.render(ex.text_a, ex.text_b, mask=word))["input_ids"]
    word_id = label_word_ids(task, tok, "spaced")[0]
    assert ids.count(word_id) == 1
    ids[ids.index(word_id)] = tok.mask_token_id
    return ids


@pytest.mark.parametrize("name, rows", [("sst2", SST2_ROWS), ("agnews", SST2_ROWS),
                                        ("mrpc", MRPC_ROWS)])
def test_encode_equals_tokenizing_the_filled_template_with_the_label_word_masked(tiny, name, rows):
    task = get_task(name)
    batch = encode(task, rows, tiny, max_len=60)
    for row, ex in enumerate(rows):
        n = int(batch.attention_mask[row].sum())
        assert batch.input_ids[row, :n].tolist() == masked_reference(task, tiny, ex)


def test_encode_rows_start_with_bos_end_with_eos_then_pad(tiny):
    batch = encode("sst2", SST2_ROWS, tiny, max_len=40)
    for row in range(2):
        n = int(batch.attention_mask[row].sum())
        assert batch.input_ids[row, 0] == tiny.cls_token_id
        assert batch.input_ids[row, n - 1] == tiny.sep_token_id
        assert set(batch.input_ids[row, n:].tolist()) == {tiny.pad_token_id}
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (40 - n)


def test_mask_onehot_marks_the_single_mask_token(tiny):
    batch = encode("mrpc", MRPC_ROWS, tiny, max_len=40)
    assert (batch.mask_onehot.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(batch.mask_onehot == 1, batch.input_ids == tiny.mask_token_id)


def test_truncation_cuts_the_text_and_keeps_template_and_mask(tiny):
    long_row, short_row = Example("x" * 100, None, 1), Example("x", None, 0)
    batch = encode("sst2", [long_row, short_row], tiny, max_len=16)
    assert batch.truncated.tolist() == [True, False]
    assert batch.attention_mask.sum(axis=1).tolist() == [16, 10]
    # Both rows end with " . It was <mask> ." + </s> (8 tokens); only the x's were cut.
    assert batch.input_ids[0, -8:].tolist() == batch.input_ids[1, 2:10].tolist()
    assert batch.input_ids[0, 1:8].tolist() == [tiny.convert_tokens_to_ids("x")] * 7


def test_pair_truncation_cuts_the_longer_text_first(tiny):
    x_id, y_id = tiny.convert_tokens_to_ids(["x", "y"])
    row = Example("x" * 30, "y" * 6, 0)
    # Around the texts: <s>, " ?" (2 tokens), <mask>, " ," (2), </s>; text_b is "Ġ" + 6 y.
    kept = encode("mrpc", [row], tiny, max_len=7 + 20).input_ids[0].tolist()
    assert (kept.count(x_id), kept.count(y_id)) == (13, 6)
    kept = encode("mrpc", [row], tiny, max_len=7 + 12).input_ids[0].tolist()
    assert (kept.count(x_id), kept.count(y_id)) == (6, 5)


def test_template_that_does_not_fit_raises_naming_the_lengths(tiny):
    with pytest.raises(ValueError, match=r"template takes 9 tokens .* max_len is 9"):
        encode("sst2", SST2_ROWS, tiny, max_len=9)


def test_max_len_plus_prompt_len_beyond_max_positions_raises(tiny):
    with pytest.raises(ValueError, match=r"max_len 100 \+ prompt_len 50 = 150 exceeds"):
        encode("sst2", SST2_ROWS, tiny, max_len=100, prompt_len=50, max_positions=128)


def test_prompt_len_within_max_positions_keeps_rows_of_max_len(tiny):
    batch = encode("sst2", SST2_ROWS, tiny, max_len=64, prompt_len=64, max_positions=128)
    assert batch.input_ids.shape == (2, 64)


def test_text_containing_the_mask_token_raises(tiny):
    with pytest.raises(ValueError, match=r"rows \[0\] have \[2\] mask tokens"):
        encode("sst2", [Example("a <mask> here", None, 0)], tiny, max_len=40)


def test_pair_task_example_without_text_b_raises(tiny):
    with pytest.raises(ValueError, match="example 0 has no text_b"):
        encode("mrpc", [Example("only one", None, 0)], tiny, max_len=40)


def test_batch_take_selects_rows(tiny):
    batch = encode("sst2", SST2_ROWS, tiny, max_len=40)
    part = batch.take(np.array([1]))
    assert isinstance(part, Batch) and len(part) == 1
    np.testing.assert_array_equal(part.input_ids[0], batch.input_ids[1])


@pytest.mark.data
@pytest.mark.parametrize("name", BBT_TASKS)
def test_encode_equals_roberta_tokenizing_the_filled_template_with_the_label_word_masked(
    roberta, name
):
    task = get_task(name)
    text_b = "Three and a half stars." if task.text_fields == ("text_a", "text_b") else None
    ex = Example("It's a \"fine\" film, isn't it?", text_b, 0)
    batch = encode(task, [ex], roberta, max_len=64)
    n = int(batch.attention_mask[0].sum())
    assert batch.input_ids[0, :n].tolist() == masked_reference(task, roberta, ex)


# ---------------------------------------------------------------------------------------------
# Tokenizer loading


def test_load_tokenizer_reads_a_directory(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    assert tok.convert_ids_to_tokens([tok.mask_token_id, tok.pad_token_id]) == ["<mask>", "<pad>"]


def test_load_tokenizer_reads_the_environment_variable(tiny_dir, monkeypatch):
    monkeypatch.setenv("SECFWT_TOKENIZER", str(tiny_dir))
    assert load_tokenizer().mask_token == "<mask>"


def test_load_tokenizer_missing_directory_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a directory with vocab"):
        load_tokenizer(tmp_path / "nowhere")


def test_load_tokenizer_directory_without_vocabulary_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither vocab.json"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_without_argument_or_environment_raises(monkeypatch):
    monkeypatch.delenv("SECFWT_TOKENIZER", raising=False)
    with pytest.raises(ValueError, match="no tokenizer: pass a directory"):
        load_tokenizer()


# ---------------------------------------------------------------------------------------------
# Metrics


def test_accuracy_is_the_fraction_predicted_correctly():
    assert accuracy([0, 1, 1, 2], [0, 1, 0, 0]) == 0.5


def test_f1_is_binary_f1_of_class_one():
    # tp = 2, fp = 1, fn = 1: F1 = 2*2 / (2*2 + 1 + 1).
    assert f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    # The same predictions scored for class 0: tp = 1, fp = 1, fn = 1.
    assert f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], positive=0) == pytest.approx(2 / 4)


def test_f1_without_any_positive_is_zero():
    assert f1([0, 0], [0, 0]) == 0.0


def test_compute_metrics_gives_the_task_metrics():
    assert compute_metrics(get_task("mrpc"), [1, 0, 1, 1], [1, 0, 0, 1]) == {
        "f1": pytest.approx(0.8), "accuracy": 0.75,
    }
    assert compute_metrics(get_task("snli"), np.array([2, 1]), np.array([2, 0])) == {
        "accuracy": 0.5
    }


def test_compute_metrics_rejects_label_ids_outside_the_task():
    with pytest.raises(ValueError, match=r"labels 0..1; preds holds \[2\]"):
        compute_metrics(get_task("sst2"), [2, 0], [1, 0])


@pytest.mark.parametrize(
    "preds, labels, message",
    [
        ([0, 1], [0], "preds has 2 entries but labels has 1"),
        ([[0.1, 0.9]], [1], "1-D label ids"),
        ([], [], "empty"),
        ([0.0, 1.0], [0, 1], "integer label ids"),
    ],
)
def test_metrics_reject_malformed_inputs(preds, labels, message):
    with pytest.raises(ValueError, match=message):
        accuracy(preds, labels)
