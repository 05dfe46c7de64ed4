"""Token ids for prompt-based classification: tokenizer loading, label-word ids, and batches.

A row is laid out as `<s> template-with-texts </s> <pad>...`, with exactly one `<mask>`. With
`placeholders=L` (the "add" prompt modes, Black-Box Tuning's rows) it is `<s> 1000 .. 1000+L-1
joint template-with-texts </s>`: BBT writes `tokenizer.decode(range(1000, 1000 + L))` in front
of its template (dataloader.py), which RoBERTa's BPE tokenizes back to exactly those ids (checked
in tests/test_bbt.py), followed by the task's `placeholder_joint` (" .") and a space.

Texts and template pieces are tokenized segment by segment (see `registry.template_segments`)
and the mask id is put in directly. That lets truncation cut the texts but never the template
or `<mask>`, and gives the ids of the filled template with a label word in place of `<mask>`
and then masked, whatever the tokenizer does with the literal string "<mask>" (transformers 5
loading a directory without tokenizer_config.json keeps the space before it as a token).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from secfwt_jax.tasks.registry import TEXT_FIELDS, Task, as_task, template_segments

ENV_TOKENIZER = "SECFWT_TOKENIZER"
# RoBERTa's 514 position embeddings minus the pad offset (ModelConfig.max_seq_len).
ROBERTA_MAX_POSITIONS = 512
# BBT's placeholder tokens are ids PLACEHOLDER_START .. PLACEHOLDER_START + L - 1
# (dataloader.py: `offset = 1000`).
PLACEHOLDER_START = 1000
LABEL_STYLES = ("bbt", "spaced")
OVERLONG = ("truncate", "drop")
_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))


def load_tokenizer(name_or_dir: str | os.PathLike | None = None):
    """A Hugging Face tokenizer (`transformers.AutoTokenizer`) from a local directory or a hub
    name; None reads the SECFWT_TOKENIZER environment variable.

    A directory needs vocab.json + merges.txt (RoBERTa's byte-level BPE) or tokenizer.json, and
    a config.json or tokenizer_config.json saying which tokenizer class to build. A path that
    does not exist is a FileNotFoundError; a hub name that cannot be loaded is an OSError
    naming it.
    """
    chosen = name_or_dir if name_or_dir is not None else os.environ.get(ENV_TOKENIZER)
    if not chosen:
        raise ValueError(
            f"no tokenizer: pass a directory (e.g. one holding RoBERTa's vocab.json and "
            f"merges.txt) or a hub name, or set {ENV_TOKENIZER}"
        )
    from transformers import AutoTokenizer

    path = Path(chosen).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer path {str(path)!r} is a file; expected a directory")
        if not any(all((path / f).is_file() for f in files) for files in _TOKENIZER_FILES):
            raise FileNotFoundError(
                f"tokenizer directory {str(path)!r} has neither vocab.json + merges.txt nor "
                f"tokenizer.json; it holds {sorted(p.name for p in path.iterdir())}"
            )
        return mask_lstrip(AutoTokenizer.from_pretrained(str(path)))
    # Hub names look like "name" or "org/name"; anything else is meant as a local path.
    if path.is_absolute() or str(chosen).startswith((".", "~")) or str(chosen).count("/") > 1:
        raise FileNotFoundError(
            f"tokenizer directory {str(path)!r} does not exist; expected a directory with "
            "vocab.json and merges.txt (e.g. <shared>/tokenizer/roberta-base)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(chosen))
    except Exception as err:
        raise OSError(
            f"could not load tokenizer {str(chosen)!r} (no such local directory; from the hub: "
            f"{type(err).__name__}: {err}); pass a local directory or set {ENV_TOKENIZER}"
        ) from err
    return mask_lstrip(tokenizer)


def field_texts(task: Task, examples: Sequence, field: str) -> list[str]:
    """The `field` text ("text_a" / "text_b") of each example; an example without it (missing,
    empty or not a string) is a ValueError naming the task, the example's index and the field."""
    texts = []
    for i, ex in enumerate(examples):
        text = getattr(ex, field, None)
        if not isinstance(text, str) or not text:
            raise ValueError(f"task {task.name!r}: example {i} has no {field} (got {text!r})")
        texts.append(text)
    return texts


def mask_lstrip(tokenizer):
    """RoBERTa's `<mask>` with lstrip=True, so " <mask>" in a text is the one mask token.

    transformers 4 builds RoBERTa's mask token so (RobertaTokenizer's default, which Black-Box
    Tuning's rows depend on); transformers 5, from a directory without tokenizer_config.json,
    leaves lstrip off and tokenizes " <mask>" as "Ġ" + "<mask>". Other mask tokens (BERT's
    [MASK]) are left as they are. Returns the tokenizer.
    """
    from transformers import AddedToken

    if tokenizer.mask_token == "<mask>":
        tokenizer.add_special_tokens({"mask_token": AddedToken(
            "<mask>", lstrip=True, rstrip=False, normalized=False, special=True)})
    return tokenizer


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    # verbose=False: rows longer than the tokenizer's model_max_length are expected here; they
    # are truncated below.
    return list(tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])


def check_lengths(max_len: int, prompt_len: int, max_positions: int, min_len: int = 1) -> None:
    """ValueError unless max_len >= min_len, prompt_len >= 0 and the two fit in max_positions
    (the position table, RoBERTa: 512 usable)."""
    if max_len < min_len or prompt_len < 0:
        raise ValueError(f"need max_len >= {min_len} and prompt_len >= 0, got {max_len} and "
                         f"{prompt_len}")
    if max_len + prompt_len > max_positions:
        raise ValueError(
            f"max_len {max_len} + prompt_len {prompt_len} = {max_len + prompt_len} exceeds "
            f"max_positions {max_positions}"
        )


def label_word_ids(task: Task | str, tokenizer, style: str = "bbt") -> tuple[int, ...]:
    """Token id of each label word, in label-id order (see the registry's docstring).

    style "bbt": the first token of the bare word, as BBT's metrics.py
    (`tokenizer.encode(word, add_special_tokens=False)[0]`), whatever the number of pieces.
    style "spaced": the word with a leading space when the template has one before `{mask}`
    ("Ġgreat"), from `spaced_label_words` where the task has them; a word that is not exactly
    one token is then a ValueError naming the word and its pieces.
    """
    t = as_task(task)
    if style not in LABEL_STYLES:
        raise ValueError(f"unknown label style {style!r}; accepted: {', '.join(LABEL_STYLES)}")
    if style == "bbt":
        return tuple(int(p[0]) for p in _token_ids(tokenizer, list(t.label_words)))
    prefix = " " if t.space_before_mask else ""
    words = [prefix + w for w in (t.spaced_label_words or t.label_words)]
    ids = []
    for word, pieces in zip(words, _token_ids(tokenizer, words)):
        if len(pieces) != 1:
            raise ValueError(
                f"task {t.name!r}: label word {word!r} is {len(pieces)} tokens "
                f"{tokenizer.convert_ids_to_tokens(pieces)}, not one; choose a single-token word"
            )
        ids.append(int(pieces[0]))
    return tuple(ids)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Encoded examples, numpy arrays with N rows of S = max_len tokens.

    input_ids (N, S) int32, `<s> ... </s>` then pad ids; attention_mask (N, S) int32, 1 on
    real tokens; mask_onehot (N, S) float32, 1 at the `<mask>` position; labels (N,) int32;
    truncated (N,) bool, True where a text was cut to fit.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    mask_onehot: np.ndarray
    labels: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index) -> Batch:
        """The rows `index` (an int array, slice or boolean mask) as a new Batch."""
        return Batch(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def _truncate(lengths: list[int], budget: int) -> list[int]:
    """Longest-first truncation (Hugging Face's "longest_first"): drop the last token of the
    longest text, the first text on ties, until the lengths sum to at most `budget`."""
    lengths = list(lengths)
    excess = sum(lengths) - budget
    if excess <= 0:
        return lengths
    if len(lengths) == 1:
        return [budget]
    a, b = lengths
    cut = min(excess, abs(a - b))
    a, b = (a - cut, b) if a >= b else (a, b - cut)
    excess -= cut
    # Now a == b (or excess == 0): alternate, text_a first.
    a, b = a - (excess + 1) // 2, b - excess // 2
    return [a, b]


def encode(
    task: Task | str,
    examples: Sequence,
    tokenizer,
    max_len: int | None,
    prompt_len: int = 0,
    *,
    max_positions: int = ROBERTA_MAX_POSITIONS,
    placeholders: int = 0,
    overlong: str = "truncate",
) -> Batch:
    """Token ids of `examples` (objects with text_a, text_b, label) under the task's template.

    Rows are `<s>` [placeholders, joint] + template with texts + `</s>`, padded with the pad
    id to S = max_len (max_len None: to the longest row kept; rows may then be as long as
    max_positions - prompt_len). A row longer than that limit is cut (overlong "truncate":
    texts cut at the end, longest text first for pairs, template and `<mask>` never cut) or
    left out (overlong "drop", BBT: dataloader.py keeps `len(input_ids) <= 512`; the returned
    Batch then has fewer rows, see `row_lengths`). prompt_len: soft-prompt vectors the model
    inserts with positions ("cat_pre_ln"); the model then sees S + prompt_len positions, which
    must not exceed max_positions (RoBERTa: 512; pass ModelConfig.max_seq_len for other
    shapes). The other prompt modes take no extra positions: pass prompt_len=0.
    placeholders: L placeholder tokens after `<s>` for the "add" prompt modes (BBT's ids
    1000..1000+L-1, then the task's placeholder_joint and a space before the template).

    ValueError when the template (with `<s>`, `</s>` and one token per text) does not fit in
    max_len, when max_len + prompt_len > max_positions, when an example lacks a text the
    template needs, or when a text itself contains the mask token.
    """
    t = as_task(task)
    if overlong not in OVERLONG:
        raise ValueError(f"unknown overlong {overlong!r}; accepted: {', '.join(OVERLONG)}")
    if placeholders < 0 or placeholders and PLACEHOLDER_START + placeholders > len(tokenizer):
        raise ValueError(
            f"placeholders={placeholders}: ids {PLACEHOLDER_START}.."
            f"{PLACEHOLDER_START + placeholders - 1} must exist in the tokenizer's vocabulary "
            f"of {len(tokenizer)}"
        )
    if max_len is None:
        max_len, pad_to_longest = max_positions - prompt_len, True
    else:
        pad_to_longest = False
    check_lengths(max_len, prompt_len, max_positions)
    special = {
        "<s>": tokenizer.cls_token_id, "</s>": tokenizer.sep_token_id,
        "<pad>": tokenizer.pad_token_id, "<mask>": tokenizer.mask_token_id,
    }
    missing = [name for name, i in special.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} lacks special tokens {missing}")
    bos, eos, pad, mask = special.values()

    segments = t.segments
    lead = [bos]
    if placeholders:
        segments = template_segments(t.placeholder_joint + " " + t.template)
        lead = [bos, *range(PLACEHOLDER_START, PLACEHOLDER_START + placeholders)]
    literal_ids = {}
    for kind, value in segments:
        if kind == "literal" and value not in literal_ids:
            literal_ids[value] = _token_ids(tokenizer, [value])[0]
    n_template = len(lead) + 2 + sum(
        len(literal_ids[v]) for kind, v in segments if kind == "literal")
    fields = t.text_fields
    budget = max_len - n_template
    if budget < len(fields):
        raise ValueError(
            f"task {t.name!r}: the template takes {n_template} tokens (with <s>, </s> and "
            f"<mask>) and needs >= {len(fields)} more for its text(s), but max_len is {max_len}"
        )

    prefixes = dict(seg for seg in segments if seg[0] in TEXT_FIELDS)
    text_ids = {}
    for field in fields:
        texts = [prefixes[field] + text for text in field_texts(t, examples, field)]
        text_ids[field] = _token_ids(tokenizer, texts)

    n = len(examples)
    fits = [sum(len(text_ids[f][i]) for f in fields) <= budget for i in range(n)]
    rows_out = [i for i in range(n) if fits[i] or overlong == "truncate"]
    if pad_to_longest and rows_out:
        max_len = n_template + max(
            min(budget, sum(len(text_ids[f][i]) for f in fields)) for i in rows_out)
    input_ids = np.full((len(rows_out), max_len), pad, dtype=np.int32)
    attention = np.zeros((len(rows_out), max_len), dtype=np.int32)
    truncated = np.zeros((len(rows_out),), dtype=bool)
    for out, i in enumerate(rows_out):
        full = [len(text_ids[f][i]) for f in fields]
        kept = dict(zip(fields, _truncate(full, budget)))
        truncated[out] = sum(kept.values()) < sum(full)
        row = list(lead)
        for kind, value in segments:
            if kind == "literal":
                row += literal_ids[value]
            elif kind == "mask":
                row.append(mask)
            else:
                row += text_ids[kind][i][: kept[kind]]
        row.append(eos)
        input_ids[out, : len(row)] = row
        attention[out, : len(row)] = 1
    mask_onehot = (input_ids == mask).astype(np.float32)
    n_masks = mask_onehot.sum(axis=1)
    if len(rows_out) and np.any(n_masks != 1):
        bad = np.flatnonzero(n_masks != 1)[:10].tolist()
        raise ValueError(
            f"task {t.name!r}: rows {bad} have {n_masks[bad].astype(int).tolist()} mask tokens, "
            "expected 1 (a text contains the mask token)"
        )
    labels = np.array([int(examples[i].label) for i in rows_out], dtype=np.int32)
    return Batch(input_ids, attention, mask_onehot, labels, truncated)


def row_lengths(
    task: Task | str, examples: Sequence, tokenizer, placeholders: int = 0
) -> np.ndarray:
    """(N,) untruncated row lengths (with `<s>`, placeholders and `</s>`) of `examples`, e.g. to
    leave out the rows BBT drops (longer than 512) before drawing its few-shot split."""
    batch = encode(task, examples, tokenizer, None, max_positions=1 << 30,
                   placeholders=placeholders)
    return batch.attention_mask.sum(1)
