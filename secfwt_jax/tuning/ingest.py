"""Secure data ingestion: the data owner's examples shared once with the servers.

`ExampleSharer.share(batch)` turns a Batch into an `ExampleSet` the evaluator calls on. On a
backend that runs MPC programs (Capabilities.mpc_program) the token and position ids are
shared as one-hot rows and the embeddings are computed under MPC, staying secret in the parties
(handles); the attention mask, <mask> one-hot and labels are shared too (the mask stays
plaintext with public_mask=True). On plaintext the embeddings are computed with jax.jit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..config import ModelConfig
from ..model import embed_fn, embed_rows_fn, position_ids, prompt_extends_sequence, vocab_rows_fn

# One-hot entries (tokens x (vocab + positions)) shared per secure embedding call: 2^25 float32
# is 128 MiB in the data owner's memory before sharing.
EMBED_CHUNK_ELEMENTS = 1 << 25
# Sub-vocabulary sizes are rounded up to a multiple of this (see ExampleSharer._secure_embeds).
VOCAB_BUCKET = 1024


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


class ExampleSharer:
    """Shares example batches with `backend` for a model with `params` (a handle or arrays).

    prompt_len / prompt_mode: the prompts the examples will meet (positions and placeholders
    depend on them). vocab_bucket: see `_secure_embeds`. public_mask: keep the attention mask
    plaintext (PromptEvaluator's docstring). account(cost) receives every call's CallCost.
    `lookups` records how each share call looked its tokens up.
    """

    def __init__(
        self, backend, config: ModelConfig, params, *, prompt_len: int, prompt_mode: str,
        vocab_bucket: int, public_mask: bool, num_labels: int, account: Callable,
    ):
        if int(vocab_bucket) < 0:
            raise ValueError(f"vocab_bucket must be >= 0 (0: whole-vocabulary one-hot), got "
                             f"{vocab_bucket}")
        self.backend, self.config, self.params = backend, config, params
        self.prompt_len, self.prompt_mode = prompt_len, prompt_mode
        self.vocab_bucket, self.public_mask = int(vocab_bucket), bool(public_mask)
        self.num_labels, self._account = num_labels, account
        self.mpc_program = backend.capabilities.mpc_program
        self.lookups: list[dict] = []
        self._embed = backend.compile(embed_fn(config, prompt_len, prompt_mode))
        self._vocab_rows = backend.compile(vocab_rows_fn(config))
        self._embed_rows = backend.compile(embed_rows_fn(config, prompt_mode))
        self._concat = None

    def share(self, batch) -> ExampleSet:
        """Share a Batch (input_ids, attention_mask, mask_onehot, labels; numpy) once.

        Backends that run MPC programs get one-hot token and position rows (the data owner's
        plaintext encoding of its own data) and compute the embeddings under MPC, keeping the
        result secret in the parties. Raises ValueError when the prompt would not fit.
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
        if self.mpc_program:
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
