"""Plain sentences (no template, no <mask>) for the similarity head (secfwt_jax.similarity).

An example is the tokenizer's own encoding of its text(s): `[CLS] text_a [SEP]` (BERT) or
`<s> text_a </s>` (RoBERTa); pairs `[CLS] text_a [SEP] text_b [SEP]` (all tokens get token
type 0, as in the template path). Each class has one label description, embedded the same way.

Descriptions: SST-2 / Yelp and AG News as in issue 14 (the first two are the zero-shot prompts
of sentence-transformers' usual sentiment demo); the others are ours: DBpedia spells out each
class name as a noun phrase; the pair tasks (MRPC, RTE, SNLI) describe the relation, which a
sentence embedding of the concatenated pair can hardly capture: expect near-chance zero-shot
accuracy there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .encode import ROBERTA_MAX_POSITIONS, Batch, check_lengths, field_texts
from .registry import Task, as_task

LABEL_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "sst2": ("It was terrible.", "It was great."),
    "yelp": ("It was terrible.", "It was great."),
    "agnews": ("World news.", "Sports news.", "Business news.", "Technology news."),
    "dbpedia": (
        "A company.", "An educational institution.", "An artist.", "An athlete.",
        "An office holder.", "A means of transportation.", "A building.", "A natural place.",
        "A village.", "An animal.", "A plant.", "An album.", "A film.", "A written work.",
    ),
    "mrpc": ("The two sentences mean different things.", "The two sentences mean the same thing."),
    "rte": ("The second sentence follows from the first.",
            "The second sentence does not follow from the first."),
    "snli": ("The two sentences agree.", "The two sentences are unrelated.",
             "The two sentences contradict each other."),
}


def label_descriptions(task: Task | str) -> tuple[str, ...]:
    """The task's label descriptions in label-id order; ValueError for a task without them."""
    t = as_task(task)
    if t.name not in LABEL_DESCRIPTIONS:
        raise ValueError(
            f"task {t.name!r} has no label descriptions for the similarity head; accepted: "
            + ", ".join(LABEL_DESCRIPTIONS)
        )
    out = LABEL_DESCRIPTIONS[t.name]
    if len(out) != t.num_labels:
        raise ValueError(f"task {t.name!r}: {len(out)} descriptions for {t.num_labels} labels")
    return out


def encode_sentences(
    task: Task | str, examples: Sequence, tokenizer, max_len: int, prompt_len: int = 0, *,
    max_positions: int = ROBERTA_MAX_POSITIONS,
) -> Batch:
    """Token ids of the examples' texts as plain sentences, padded to S = max_len.

    Returns a Batch whose mask_onehot is all zeros (there is no <mask>); texts that do not fit
    are cut by the tokenizer ("longest_first"), flagged in `truncated`. prompt_len: as in
    `encode.encode` ("cat_pre_ln" soft prompts take positions too).
    """
    t = as_task(task)
    check_lengths(max_len, prompt_len, max_positions, min_len=3)
    texts = [field_texts(t, examples, field) for field in t.text_fields]
    labels = np.array([int(ex.label) for ex in examples], np.int32).reshape(len(examples))
    return _batch(tokenizer, texts, labels, max_len)


def encode_descriptions(task: Task | str, tokenizer, max_len: int = 32) -> Batch:
    """The task's label descriptions as a Batch (labels 0..C-1), padded to their longest."""
    texts = list(label_descriptions(task))
    longest = max(len(ids) for ids in tokenizer(texts)["input_ids"])
    if longest > max_len:
        raise ValueError(f"a label description is {longest} tokens, more than max_len {max_len}")
    return _batch(tokenizer, [texts], np.arange(len(texts), dtype=np.int32), longest)


def _batch(tokenizer, texts: list[list[str]], labels, max_len: int) -> Batch:
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token")
    enc = tokenizer(*texts, truncation="longest_first", max_length=max_len,
                    padding="max_length", verbose=False)
    full = tokenizer(*texts, verbose=False)["input_ids"]
    ids = np.asarray(enc["input_ids"], np.int32).reshape(len(labels), max_len)
    mask = np.asarray(enc["attention_mask"], np.int32).reshape(len(labels), max_len)
    truncated = np.array([len(f) > max_len for f in full], bool).reshape(len(labels))
    return Batch(ids, mask, np.zeros(ids.shape, np.float32), labels, truncated)
