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

from ..config import ModelConfig
from ..model import embed_fn, position_ids, verbalizer_fn

LOSSES = ("ce", "hinge")
# One-hot entries (tokens x (vocab + positions)) shared per secure embedding call: 2^25 float32
# is 128 MiB in the data owner's memory before sharing.
EMBED_CHUNK_ELEMENTS = 1 << 25
REVEALS = ("logits", "loss")


def candidate_losses(logits, labels, kind: str = "ce"):
    """Mean loss of each candidate. logits (P, B, C), labels (B,) int -> (P,).

    ce: cross-entropy of the softmax over the C label words (as in Black-Box Tuning).
    hinge: multi-class margin loss mean_b max(0, 1 - (l_y - max_{c != y} l_c)).
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; accepted: {', '.join(LOSSES)}")
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if kind == "ce":
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits, axis=-1) * onehot, -1), axis=-1)
    correct = jnp.sum(logits * onehot, -1)
    other = jnp.max(logits - 1e4 * onehot, -1)
    return jnp.mean(jax.nn.relu(1.0 - (correct - other)), axis=-1)


def one_hot(idx: np.ndarray, n: int) -> np.ndarray:
    """(..., n) float32 one-hot rows of integer ids (without an (n, n) identity matrix)."""
    out = np.zeros((*idx.shape, n), np.float32)
    np.put_along_axis(out, idx[..., None].astype(np.int64), 1.0, axis=-1)
    return out


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


class PromptEvaluator:
    """Evaluates candidate soft prompts on shared examples through a backend."""

    def __init__(
        self, backend, config: ModelConfig, params_handle, label_word_ids, *,
        prompt_len: int, prompt_mode: str = "cat", loss: str = "ce", reveal: str = "logits",
    ):
        if reveal not in REVEALS:
            raise ValueError(f"unknown reveal {reveal!r}; accepted: {', '.join(REVEALS)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; accepted: {', '.join(LOSSES)}")
        self.backend, self.config, self.params = backend, config, params_handle
        self.prompt_len, self.prompt_mode = prompt_len, prompt_mode
        self.loss, self.reveal = loss, reveal
        self.num_labels = len(label_word_ids)
        self.secure = backend.name != "plaintext"
        self._embed = backend.compile(embed_fn(config, prompt_len, prompt_mode))
        verbalize = verbalizer_fn(config, label_word_ids, prompt_mode)
        self._logits = backend.compile(verbalize)

        def losses(params, embeds, mask, mask_onehot, prompts, labels_onehot):
            logits = verbalize(params, embeds, mask, mask_onehot, prompts)
            return candidate_losses(logits, jnp.argmax(labels_onehot, -1), loss)

        self._losses = backend.compile(losses)
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
                embeds, put(mask, owner="data"), put(mask_onehot, owner="data"),
                put(labels_onehot, owner="data"), labels, len(labels),
            )
        embeds, cost = self._embed(self.params, ids, pos)
        self._account(cost)
        return ExampleSet(embeds, mask, mask_onehot, labels_onehot, labels, len(labels))

    def _secure_embeds(self, ids, pos):
        """Embeddings of (N, S) token ids kept secret in the parties: one-hot rows, shared in
        chunks of at most `EMBED_CHUNK_ELEMENTS` one-hot entries (a (N, S, V) one-hot of a
        real vocabulary does not fit in memory at once), then concatenated under MPC."""
        v, p = self.config.vocab_size, self.config.max_position_embeddings
        rows = max(1, EMBED_CHUNK_ELEMENTS // (ids.shape[1] * (v + p)))
        parts = []
        for start in range(0, len(ids), rows):
            tokens = one_hot(ids[start:start + rows], v)
            positions = one_hot(pos[start:start + rows], p)
            part, cost = self._embed(self.params, tokens, positions, reveal=False)
            self._account(cost)
            parts.append(part)
        if len(parts) == 1:
            return parts[0]
        if self._concat is None:
            self._concat = self.backend.compile(lambda *xs: jnp.concatenate(xs, axis=0))
        embeds, cost = self._concat(*parts, reveal=False)
        self._account(cost)
        for part in parts:
            self.backend.delete(part)
        return embeds

    def logits(self, examples: ExampleSet, prompts) -> np.ndarray:
        """(P, B, C) label-word logits revealed to the data owner. prompts (P, L, H)."""
        out, cost = self._logits(
            self.params, examples.embeds, examples.mask, examples.mask_onehot,
            np.asarray(prompts, np.float32),
        )
        self._account(cost)
        return np.asarray(out)

    def losses(self, examples: ExampleSet, prompts) -> tuple[np.ndarray, np.ndarray | None]:
        """(P,) losses of the candidates, and the (P, B, C) logits when those are revealed.

        With reveal="loss" the loss is computed inside the secure program and only the P
        numbers are revealed; with reveal="logits" the data owner computes it in plaintext.
        """
        if self.reveal == "loss":
            out, cost = self._losses(
                self.params, examples.embeds, examples.mask, examples.mask_onehot,
                np.asarray(prompts, np.float32), examples.labels_onehot,
            )
            self._account(cost)
            return np.asarray(out), None
        logits = self.logits(examples, prompts)
        return np.asarray(candidate_losses(logits, examples.labels, self.loss)), logits

    def predict(self, examples: ExampleSet, prompt) -> np.ndarray:
        """Predicted labels (B,) of one prompt (L, H). Used for dev and test metrics, so the
        logits are revealed here whatever `reveal` says (the data owner's own evaluation)."""
        return self.logits(examples, np.asarray(prompt)[None])[0].argmax(-1)
