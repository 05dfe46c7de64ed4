"""`planted`: a synthetic task that needs no download, the offline demo and the test bed.

Inputs are random token sequences `<s> t_1 .. t_n <mask> </s>` (padded; in the "add" prompt
modes `<s>` is followed by L fixed placeholder tokens, as Black-Box Tuning's rows are); labels
come from a
hidden teacher prompt P* = z* A on the same model (the teacher's label-word argmax at the
mask), so the task is solvable by a prompt in the tuner's own search space (the same A): a
tuner can reach ~100% train accuracy while the zero prompt sits near chance. Of `pool` times
more random inputs than needed, those with the widest teacher margin are kept. Among seeded
teacher draws, the one with the most balanced labels on which the zero prompt does
worst is kept, so "near chance" is checked rather than hoped for.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import ModelConfig
from ..model import embed_fn, position_ids, prompt_extends_sequence, verbalizer_fn
from .encode import Batch

NAME = "planted"
# <s>, at least one text token, <mask>, </s>
MIN_SEQ_LEN = 4


@dataclasses.dataclass(frozen=True)
class Planted:
    """The generated splits, the label-word ids, and the (secret to the tuner) teacher."""

    train: Batch
    dev: Batch
    test: Batch
    label_word_ids: tuple[int, ...]
    teacher_z: np.ndarray
    zero_prompt_train_acc: float


def placeholder_ids(config: ModelConfig, count: int) -> np.ndarray:
    """The planted task's `count` placeholder tokens: the `count` highest ids below 5000 (or
    the vocabulary's end) that are not special; random text never uses them."""
    special = {config.pad_token_id, config.bos_token_id, config.eos_token_id, config.mask_token_id}
    top = [i for i in range(min(config.vocab_size, 5000) - 1, -1, -1) if i not in special]
    return np.array(top[:count][::-1], np.int32)


def random_batch(
    config: ModelConfig, n: int, seq_len: int, rng, placeholders: int = 0
) -> np.ndarray:
    """(n, seq_len + placeholders) token ids `<s> [placeholders] t.. <mask> </s> <pad>..` with
    random text lengths >= half of seq_len - 3."""
    special = {config.pad_token_id, config.bos_token_id, config.eos_token_id, config.mask_token_id}
    fixed = placeholder_ids(config, placeholders)
    vocab = np.array([i for i in range(min(config.vocab_size, 5000))
                      if i not in special and i not in set(fixed.tolist())])
    ids = np.full((n, seq_len + placeholders), config.pad_token_id, np.int32)
    for row in range(n):
        length = int(rng.integers(max(1, (seq_len - 3) // 2), seq_len - 3 + 1))
        ids[row, 0] = config.bos_token_id
        ids[row, 1:1 + placeholders] = fixed
        start = 1 + placeholders
        ids[row, start:start + length] = rng.choice(vocab, length)
        ids[row, start + length] = config.mask_token_id
        ids[row, start + length + 1] = config.eos_token_id
    return ids


def _batch(config, ids, labels) -> Batch:
    return Batch(
        input_ids=ids, attention_mask=(ids != config.pad_token_id).astype(np.int32),
        mask_onehot=(ids == config.mask_token_id).astype(np.float32),
        labels=labels.astype(np.int32), truncated=np.zeros(len(ids), bool),
    )


def _widest_per_class(margin, pred, n, num_labels, rng) -> np.ndarray:
    """Indices (n,) of the inputs with the widest margins, n // C from each predicted class
    (fewer when a class is rare; the rest from the widest of any class), in shuffled order."""
    chosen = []
    for c in range(num_labels):
        idx = np.flatnonzero(pred == c)
        chosen.extend(idx[np.argsort(margin[idx])[::-1][: n // num_labels]])
    rest = [i for i in np.argsort(margin)[::-1] if i not in set(chosen)]
    chosen.extend(rest[: n - len(chosen)])
    return rng.permutation(np.array(chosen))


def make_planted(
    config: ModelConfig, params, projection: np.ndarray, *, prompt_len: int, num_labels: int = 2,
    n_train: int = 32, n_dev: int = 32, n_test: int = 64, seq_len: int = 12,
    teacher_scale: float = 1.0, prompt_mode: str = "cat_pre_ln", seed: int = 0, draws: int = 32,
    pool: int = 3,
) -> Planted:
    """Generate the planted task for this model and projection A (d, L*H).

    teacher_scale: std of the teacher's z* (the tuner starts from z = 0 with step size sigma0).
    pool: inputs generated per input kept (the kept ones have the widest teacher margins).
    """
    for key, value, low in (("seq_len", seq_len, MIN_SEQ_LEN), ("num_labels", num_labels, 2),
                            ("n_train", n_train, 1), ("n_dev", n_dev, 1), ("n_test", n_test, 1),
                            ("draws", draws, 1), ("pool", pool, 1), ("prompt_len", prompt_len, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"planted task: {key} must be an integer >= {low}, got {value!r}")
    if num_labels > min(config.vocab_size, 5000) - 4:
        raise ValueError(f"planted task: num_labels {num_labels} exceeds the candidate label "
                         f"words of a {config.vocab_size}-token vocabulary")
    if seq_len > config.max_seq_len - (prompt_len if prompt_mode == "cat" else 0):
        raise ValueError(
            f"planted task: seq_len {seq_len} plus the {prompt_len} prompt tokens exceeds the "
            f"model's {config.max_seq_len} positions"
        )
    rng = np.random.default_rng(seed)
    n = n_train + n_dev + n_test
    slots = 0 if prompt_extends_sequence(prompt_mode) else prompt_len
    ids = random_batch(config, pool * n, seq_len, rng, placeholders=slots)
    mask = (ids != config.pad_token_id).astype(np.int32)
    onehot = (ids == config.mask_token_id).astype(np.float32)
    candidates = [i for i in range(3, min(config.vocab_size, 5000)) if i != config.mask_token_id]
    words = tuple(int(w) for w in rng.choice(candidates, num_labels, replace=False))
    embeds = embed_fn(config, prompt_len, prompt_mode)(
        params, ids, position_ids(mask, config, prompt_len, prompt_mode)
    )
    # the teacher runs in plaintext, where the masked trigonometry is the built-in cos/sin with
    # identity masks (same function to float rounding), so it needs no per-call masks
    f = verbalizer_fn(config.replace(rfa_trig="builtin"), words, prompt_mode)
    hidden = config.hidden_size
    zs = rng.standard_normal((draws, projection.shape[0])).astype(np.float32) * teacher_scale
    prompts = np.concatenate([np.zeros((1, projection.shape[0]), np.float32), zs]) @ projection
    logits = np.asarray(f(params, embeds, mask, onehot, prompts.reshape(-1, prompt_len, hidden)))
    # keep, per teacher, the n inputs with the widest teacher margin (top-1 minus top-2 logit):
    # labels decided by near-ties would be noise for any tuner
    # (n // C per class, so the classes stay balanced)
    top2 = np.sort(logits[1:], axis=-1)[..., -2:]
    margin, pred = top2[..., 1] - top2[..., 0], logits[1:].argmax(-1)
    keep = np.stack([_widest_per_class(m, p, n, num_labels, rng) for m, p in zip(margin, pred)])
    zero_pred = logits[0].argmax(-1)[keep]  # (draws, n)
    teacher_preds = np.take_along_axis(logits[1:].argmax(-1), keep, 1)
    split = np.split(np.arange(n), [n_train, n_train + n_dev])
    # score: balanced classes, and a zero prompt at chance on the training split
    balance = np.array([np.bincount(p, minlength=num_labels).min() / n for p in teacher_preds])
    zero_acc = np.mean(teacher_preds[:, split[0]] == zero_pred[:, split[0]], axis=1)
    ok = (balance >= 0.3 / num_labels) & (zero_acc <= 1.0 / num_labels + 0.1)
    if not ok.any():
        raise ValueError(
            f"planted task: none of {draws} teacher draws gives balanced labels with the zero "
            f"prompt near chance (zero-prompt accuracies {np.round(zero_acc, 2).tolist()}); "
            "raise teacher_scale or draws, or use a model whose output depends on its input "
            "(e.g. initializer_range 0.3 for random tiny models)"
        )
    best = int(np.argmax(np.where(ok, balance - np.abs(zero_acc - 1.0 / num_labels), -np.inf)))
    labels, rows = teacher_preds[best], ids[keep[best]]
    train, dev, test = (_batch(config, rows[s], labels[s]) for s in split)
    return Planted(train, dev, test, words, zs[best], float(zero_acc[best]))
