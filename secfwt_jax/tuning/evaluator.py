"""The data owner's view of the servers: verbalizer logits (or losses) of candidate prompts.

One `PromptEvaluator` per (backend, model, label words). Examples are shared once
(`share_examples`): their embeddings are computed once under MPC and stay secret shares in the
parties; only the candidate prompts travel per generation, and all P x B sequences of a
generation run in one call. The same code drives the plaintext backend (jax.jit), so a
plaintext run is the secure run's function without the cryptography.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..backend.masked_trig import call_trig_masks, model_reveal_fn
from ..config import ModelConfig
from ..model import (
    embed_fn,
    embed_rows_fn,
    position_ids,
    prompt_extends_sequence,
    verbalizer_fn,
    vocab_rows_fn,
)
from .public_mask import with_public_mask

LOSSES = ("ce", "hinge", "hinge_max")
# Black-Box Tuning's hinge margin (metrics.py: `self.margin = 2`).
HINGE_MARGIN = 2.0
# One-hot entries (tokens x (vocab + positions)) shared per secure embedding call: 2^25 float32
# is 128 MiB in the data owner's memory before sharing.
EMBED_CHUNK_ELEMENTS = 1 << 25
REVEALS = ("logits", "loss")
# Sub-vocabulary sizes are rounded up to a multiple of this (see PromptEvaluator).
VOCAB_BUCKET = 1024


def candidate_losses(logits, labels, kind: str = "ce"):
    """Mean loss of each candidate. logits (P, B, C), labels (B,) int -> (P,).

    ce: cross-entropy of the softmax over the C label words (BBT's "ce"; BBT divides its mean
    by B once more, a constant factor that rank-based CMA-ES ignores).
    hinge: Black-Box Tuning's default (bbt.py `loss_type='hinge'`, utils.hinge_loss with
    metrics.py's margin 2): mean_b sum_{c != y} max(0, l_c - l_y + 2).
    hinge_max (ours, earlier): mean_b max(0, 1 - (l_y - max_{c != y} l_c)).
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; accepted: {', '.join(LOSSES)}")
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if kind == "ce":
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits, axis=-1) * onehot, -1), axis=-1)
    correct = jnp.sum(logits * onehot, -1)
    if kind == "hinge":
        per_class = jax.nn.relu(logits - correct[..., None] + HINGE_MARGIN) * (1 - onehot)
        return jnp.mean(jnp.sum(per_class, -1), axis=-1)
    other = jnp.max(logits - 1e4 * onehot, -1)
    return jnp.mean(jax.nn.relu(1.0 - (correct - other)), axis=-1)


def one_hot(idx: np.ndarray, n: int) -> np.ndarray:
    """(..., n) float32 one-hot rows of integer ids (without an (n, n) identity matrix)."""
    out = np.zeros((*idx.shape, n), np.float32)
    np.put_along_axis(out, idx[..., None].astype(np.int64), 1.0, axis=-1)
    return out


def check_placeholders(ids: np.ndarray, mask_onehot: np.ndarray, prompt_len: int, mode: str):
    """In the "add" modes the prompt lands on positions 1..L: they must hold the same
    placeholder tokens in every row (secfwt_jax.tasks.encode(..., placeholders=L)), never text
    or the <mask>. ValueError otherwise (a row encoded without placeholders)."""
    if not prompt_len:
        return
    slots = ids[:, 1:1 + prompt_len]
    mask_pos = np.asarray(mask_onehot).argmax(1)
    if ids.shape[1] <= prompt_len or np.any(slots != slots[:1]) or np.any(mask_pos <= prompt_len):
        raise ValueError(
            f"prompt_mode {mode!r} adds the prompt to positions 1..{prompt_len}, which must hold "
            f"the same {prompt_len} placeholder tokens in every row with the <mask> after them; "
            "encode the examples with placeholders=prompt_len (secfwt_jax.tasks.encode), or use "
            "a 'cat' mode"
        )


@dataclasses.dataclass
class ExampleSet:
    """Examples as the servers hold them (handles on a secure backend) plus the data owner's
    plaintext labels. size: number of examples B."""

    embeds: Any
    mask: Any
    mask_onehot: Any
    labels_onehot: Any
    labels: np.ndarray
    size: int
    width: int  # tokens per example after the common padding was trimmed


class PromptEvaluator:
    """Evaluates candidate soft prompts on shared examples through a backend.

    public_mask: False (default) shares the attention mask, so the examples' lengths stay
    secret; True reveals the lengths to the servers (PUMA's setting) and folds the mask into
    the programs as a public constant, which saves the secret x secret mask products
    (tuning/public_mask.py; results/public_mask/ measures the saving).
    """

    def __init__(
        self, backend, config: ModelConfig, params_handle, label_word_ids, *,
        prompt_len: int, prompt_mode: str = "cat_pre_ln", loss: str = "ce", reveal: str = "logits",
        vocab_bucket: int = VOCAB_BUCKET, public_mask: bool = False,
    ):
        if reveal not in REVEALS:
            raise ValueError(f"unknown reveal {reveal!r}; accepted: {', '.join(REVEALS)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; accepted: {', '.join(LOSSES)}")
        self.backend, self.config, self.params = backend, config, params_handle
        self.prompt_len, self.prompt_mode = prompt_len, prompt_mode
        self.loss, self.reveal = loss, reveal
        if int(vocab_bucket) < 0:
            raise ValueError(f"vocab_bucket must be >= 0 (0: whole-vocabulary one-hot), got "
                             f"{vocab_bucket}")
        self.vocab_bucket = int(vocab_bucket)
        self.lookups: list[dict] = []  # how each share_examples call looked its tokens up
        self.num_labels = len(label_word_ids)
        self.secure = backend.name != "plaintext"
        self._embed = backend.compile(embed_fn(config, prompt_len, prompt_mode))
        self._vocab_rows = backend.compile(vocab_rows_fn(config))
        self._embed_rows = backend.compile(embed_rows_fn(config, prompt_mode))
        # rfa_trig="masked": every call gets fresh trig masks from the data owner (the dealer,
        # docs/masked_trig.md), drawn from os.urandom (never from the run seed: a seed would
        # let anyone who knows it unmask, and would replay masks across runs and resumes),
        # and opens the masked angles to the servers inside the program
        verbalize = verbalizer_fn(config, label_word_ids, prompt_mode,
                                  reveal=model_reveal_fn(backend, config))
        self._logits = backend.compile(verbalize)

        def losses(params, embeds, mask, mask_onehot, prompts, labels_onehot, *trig_masks):
            logits = verbalize(params, embeds, mask, mask_onehot, prompts, *trig_masks)
            return candidate_losses(logits, jnp.argmax(labels_onehot, -1), loss)

        self._losses = backend.compile(losses)
        # public_mask=True (lengths revealed, as in PUMA; see tuning/public_mask.py): the mask
        # stays plaintext and is folded into one compiled program per distinct mask
        self.public_mask, self._raw = bool(public_mask), {"logits": verbalize, "loss": losses}
        self._public_fns: dict = {}
        self._concat = None
        self.costs: list = []  # one CallCost per backend call, in order

    @property
    def bytes_total(self) -> int:
        return sum(int(c.bytes_total) for c in self.costs)

    @property
    def calls(self) -> int:
        return len(self.costs)

    def _account(self, cost):
        self.costs.append(cost)

    def share_examples(self, batch) -> ExampleSet:
        """Share a Batch (input_ids, attention_mask, mask_onehot, labels; numpy) once.

        Secure backends get one-hot token and position rows (the data owner's plaintext
        encoding of its own data) and compute the embeddings under MPC, keeping the result
        secret in the parties. Raises ValueError when the prompt would not fit.
        """
        if (np.shape(batch.input_ids) != np.shape(batch.attention_mask)
                or np.shape(batch.mask_onehot) != np.shape(batch.input_ids)):
            raise ValueError(
                f"mismatched batch shapes: input_ids {np.shape(batch.input_ids)}, attention_mask "
                f"{np.shape(batch.attention_mask)}, mask_onehot {np.shape(batch.mask_onehot)}"
            )
        ids = np.asarray(batch.input_ids, np.int32)
        mask = np.asarray(batch.attention_mask, np.int32)
        # drop trailing columns that are padding in every row: same outputs, fewer tokens
        width = int(np.flatnonzero(mask.any(0)).max()) + 1 if mask.any() else 1
        ids, mask = ids[:, :width], mask[:, :width]
        mask_onehot = np.asarray(batch.mask_onehot, np.float32)[:, :width]
        pos = position_ids(mask, self.config, self.prompt_len, self.prompt_mode)
        if not prompt_extends_sequence(self.prompt_mode):
            check_placeholders(ids, mask_onehot, self.prompt_len, self.prompt_mode)
        if int(ids.max()) >= self.config.vocab_size:
            raise ValueError(
                f"token id {int(ids.max())} is outside the model's vocabulary "
                f"({self.config.vocab_size}); use a model config built for this tokenizer"
            )
        labels = np.asarray(batch.labels, np.int32)
        labels_onehot = np.eye(self.num_labels, dtype=np.float32)[labels]
        if self.secure:
            embeds = self._secure_embeds(ids, pos)
            put = self.backend.put
            return ExampleSet(
                embeds, mask if self.public_mask else put(mask, owner="data"),
                put(mask_onehot, owner="data"),
                put(labels_onehot, owner="data"), labels, len(labels), width,
            )
        embeds, cost = self._embed(self.params, ids, pos)
        self._account(cost)
        return ExampleSet(embeds, mask, mask_onehot, labels_onehot, labels, len(labels), width)

    def _secure_embeds(self, ids, pos):
        """Embeddings of (N, S) token ids, kept secret in the parties.

        The data owner shares one-hot rows and the lookup is a secret matmul. Sharing an
        (N, S, V) one-hot of a 50k vocabulary dominates the cost of a large example set, so
        when it is cheaper the lookup has two stages: the data owner shares a (U, V) one-hot
        selecting the U distinct token ids of the set (padded with unused ids up to a multiple
        of `vocab_bucket`), the servers compute those U rows of the secret table, and each
        token is a one-hot over the U rows: U V + N S U shared entries instead of N S V. What
        the servers learn beyond the shapes: U, i.e. the number of distinct tokens rounded up
        to the bucket (vocab_bucket=0: always the whole-vocabulary one-hot, U not revealed).
        One-hot arrays are shared in chunks of at most `EMBED_CHUNK_ELEMENTS` entries and
        concatenated under MPC. `self.lookups` records the choice of every call.
        """
        n_tok, v, p = ids.size, self.config.vocab_size, self.config.max_position_embeddings
        distinct = np.unique(ids)
        b = self.vocab_bucket
        u = min(v, -(-len(distinct) // b) * b) if b else v
        if not b or u * v + n_tok * u >= n_tok * v:
            self.lookups.append(dict(kind="onehot", vocab=v, tokens=n_tok))
            return self._chunked(
                lambda sl: self._embed(self.params, one_hot(ids[sl], v), one_hot(pos[sl], p),
                                       reveal=False),
                len(ids), ids.shape[1] * (v + p))
        self.lookups.append(dict(kind="subvocab", vocab=v, tokens=n_tok, rows=u,
                                 distinct=len(distinct)))
        unused = np.setdiff1d(np.arange(v), distinct, assume_unique=True)[:u - len(distinct)]
        selection = np.concatenate([distinct, unused])
        rows = self._chunked(
            lambda sl: self._vocab_rows(self.params, one_hot(selection[sl], v), reveal=False),
            u, v)
        local = np.searchsorted(distinct, ids).astype(np.int32)
        embeds = self._chunked(
            lambda sl: self._embed_rows(self.params, rows, one_hot(local[sl], u),
                                        one_hot(pos[sl], p), reveal=False),
            len(ids), ids.shape[1] * (u + p))
        self.backend.delete(rows)
        return embeds

    def _chunked(self, call, n: int, elements_per_row: int):
        """Secret (n, ...) result of call(slice) over row chunks of at most
        EMBED_CHUNK_ELEMENTS one-hot entries, concatenated under MPC."""
        step = max(1, EMBED_CHUNK_ELEMENTS // elements_per_row)
        parts = []
        for start in range(0, n, step):
            part, cost = call(slice(start, start + step))
            self._account(cost)
            parts.append(part)
        if len(parts) == 1:
            return parts[0]
        if self._concat is None:
            self._concat = self.backend.compile(lambda *xs: jnp.concatenate(xs, axis=0))
        out, cost = self._concat(*parts, reveal=False)
        self._account(cost)
        for part in parts:
            self.backend.delete(part)
        return out

    def _trig_masks(self, examples: ExampleSet, prompts) -> tuple:
        """() or (fresh masks for this call,) when the model uses the masked trigonometry."""
        extra = self.prompt_len if prompt_extends_sequence(self.prompt_mode) else 0
        seq_len = examples.width + extra
        return call_trig_masks(self.backend, self.config, len(prompts) * examples.size, seq_len)

    def _call(self, kind: str, examples: ExampleSet, *rest):
        """Run the "logits" or "loss" program; with a public mask, its per-mask program."""
        if not (self.public_mask and self.secure):
            fn = self._logits if kind == "logits" else self._losses
            return fn(self.params, examples.embeds, examples.mask, examples.mask_onehot, *rest)
        key = (kind, examples.mask.shape, examples.mask.tobytes())
        if key not in self._public_fns:
            self._public_fns[key] = self.backend.compile(
                with_public_mask(self._raw[kind], examples.mask))
        return self._public_fns[key](self.params, examples.embeds, examples.mask_onehot, *rest)

    def logits(self, examples: ExampleSet, prompts) -> np.ndarray:
        """(P, B, C) label-word logits revealed to the data owner. prompts (P, L, H)."""
        prompts = np.asarray(prompts, np.float32)
        out, cost = self._call("logits", examples, prompts, *self._trig_masks(examples, prompts))
        self._account(cost)
        return np.asarray(out)

    def losses(self, examples: ExampleSet, prompts) -> tuple[np.ndarray, np.ndarray | None]:
        """(P,) losses of the candidates, and the (P, B, C) logits when those are revealed.

        With reveal="loss" the loss is computed inside the secure program and only the P
        numbers are revealed; with reveal="logits" the data owner computes it in plaintext.
        """
        if self.reveal == "loss":
            prompts = np.asarray(prompts, np.float32)
            out, cost = self._call("loss", examples, prompts, examples.labels_onehot,
                                   *self._trig_masks(examples, prompts))
            self._account(cost)
            return np.asarray(out), None
        logits = self.logits(examples, prompts)
        return np.asarray(candidate_losses(logits, examples.labels, self.loss)), logits

    def predict(self, examples: ExampleSet, prompt) -> np.ndarray:
        """Predicted labels (B,) of one prompt (L, H). Used for dev and test metrics, so the
        logits are revealed here whatever `reveal` says (the data owner's own evaluation)."""
        return self.logits(examples, np.asarray(prompt)[None])[0].argmax(-1)
