"""Flax (linen) RoBERTa / BERT encoder with its masked-LM head, soft prompts and a verbalizer head.

Free of I/O and of MPC: every entry point is a pure function of (params, inputs), so the same
code runs under jax.jit and under SPU. The one extension point is `ops` (secfwt_jax.model_ops,
default PLAIN_OPS): a hook object through which an MPC backend's replacement of a computation
(today: rfa's cos/sin by masked trigonometry) reaches the layers; the functions below take the
ops' per-call inputs after their own arguments. Parameter names follow Hugging Face's PyTorch
RoBERTa (see secfwt_jax.loading for the mapping). BERT (config.model_type "bert") is the same
network but for its position ids, which start at 0 instead of after the pad id; every token has
token type 0 (the prompt template is one segment). A config with mlm_head=False (an encoder-only
checkpoint) has no head parameters; `__call__` then returns the last hidden states.

Entry points
- `RobertaMLM(cfg).apply({"params": p}, input_ids, attention_mask)` -> (B, S, V) MLM logits
  ((B, S, H) hidden states without an MLM head).
- `embed_fn(cfg, prompt_len, prompt_mode)`: the frozen part, (B, S, H) token + position +
  type embeddings of the examples (followed by the embedding LayerNorm in the modes that add
  the prompt after it), computed once per example set.
- `verbalizer_fn(cfg, label_word_ids, prompt_mode, ops)`: (P, B, C) label-word logits at the mask
  position for P candidate prompts on B examples, one call for the whole population.

Soft prompts of L vectors, by `prompt_mode` (Black-Box Tuning, github.com/txsun1997/
Black-Box-Tuning, modeling_roberta.py, RobertaModel.forward):
- "add" (BBT's default): the row holds L placeholder tokens right after <s> (the tokenizer's
  side, secfwt_jax.tasks.encode); the prompt is added to positions 1..L *after* the embedding
  LayerNorm, so a zero prompt leaves the placeholder tokens' normalised embeddings.
- "cat" (BBT's other mode): the L vectors go in front of <s>, after the LayerNorm, with no
  position embedding; the text keeps its positions. The sequence grows by L.
- "cat_pre_ln" (ours): the L vectors, plus position embeddings 3..L+2, go right after <s> and
  through the LayerNorm; the text's positions shift by L.
- "add_pre_ln" (ours): as "add", but the prompt is added before the LayerNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import layers
from .config import PROMPT_MODES, ModelConfig, check_choice
from .model_ops import PLAIN_OPS


class LayerNorm(nn.Module):
    """Affine layer norm over the last axis; the formula lives in layers.layer_norm."""

    eps: float
    kind: str = "exact"

    @nn.compact
    def __call__(self, x):
        h = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (h,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (h,), jnp.float32)
        return layers.layer_norm(x, scale, bias, self.eps, self.kind)


def _dense(features: int, name: str, config: ModelConfig) -> nn.Dense:
    init = nn.initializers.normal(config.initializer_range)
    return nn.Dense(features, name=name, kernel_init=init)


class SelfAttention(nn.Module):
    config: ModelConfig
    layer_index: int
    ops: Any = PLAIN_OPS  # the model's extension point (secfwt_jax.model_ops), bound per call

    @nn.compact
    def __call__(self, x, mask):
        """x: (B, S, H), mask: (B, S) -> (B, S, H)."""
        c = self.config
        b, s, _ = x.shape
        cos_sin = self.ops.rfa_cos_sin(c, self.layer_index)  # None: built-in cos / sin

        def heads(t):
            return t.reshape(b, s, c.num_attention_heads, c.head_dim).transpose(0, 2, 1, 3)

        q = heads(_dense(c.hidden_size, "query", c)(x))
        k = heads(_dense(c.hidden_size, "key", c)(x))
        v = heads(_dense(c.hidden_size, "value", c)(x))
        w = None
        if c.attention in ("rfa", "favor"):
            w = layers.random_features(
                c.num_features, c.head_dim, c.feature_kind, c.feature_seed * 1000 + self.layer_index
            )
        o = layers.attention(
            c.attention, q, k, v, mask, w=w, normalize=c.normalize_qk, clip=c.softmax_clip,
            cos_sin=cos_sin, rfa_lean=c.rfa_lean,
        )
        return o.transpose(0, 2, 1, 3).reshape(b, s, c.hidden_size)


class Layer(nn.Module):
    """One post-LN transformer block: attention, residual, LN; MLP, residual, LN."""

    config: ModelConfig
    layer_index: int
    ops: Any = PLAIN_OPS

    @nn.compact
    def __call__(self, x, mask):
        c = self.config
        a = SelfAttention(c, self.layer_index, self.ops, name="attention")(x, mask)
        a = _dense(c.hidden_size, "attention_output", c)(a)
        x = LayerNorm(c.layer_norm_eps, c.layernorm, name="attention_layer_norm")(x + a)
        h = layers.activation(c.activation)(_dense(c.intermediate_size, "intermediate", c)(x))
        h = _dense(c.hidden_size, "output", c)(h)
        return LayerNorm(c.layer_norm_eps, c.layernorm, name="output_layer_norm")(x + h)


class RobertaMLM(nn.Module):
    """RoBERTa encoder + masked-LM head (decoder tied to the word embeddings).

    ops: the model's extension point (secfwt_jax.model_ops), already bound to this call's
    inputs; PLAIN_OPS (default) uses the network's own functions.
    """

    config: ModelConfig
    ops: Any = PLAIN_OPS

    def setup(self):
        c = self.config
        init = nn.initializers.normal(c.initializer_range)
        self.word_embeddings = self.param("word_embeddings", init, (c.vocab_size, c.hidden_size))
        self.position_embeddings = self.param(
            "position_embeddings", init, (c.max_position_embeddings, c.hidden_size)
        )
        self.token_type_embeddings = self.param(
            "token_type_embeddings", init, (c.type_vocab_size, c.hidden_size)
        )
        self.embeddings_layer_norm = LayerNorm(c.layer_norm_eps, c.layernorm)
        self.layers = [Layer(c, i, self.ops) for i in range(c.num_hidden_layers)]
        if c.mlm_head:
            self.head_dense = _dense(c.hidden_size, "head_dense", c)
            self.head_layer_norm = LayerNorm(c.layer_norm_eps, c.layernorm)
            self.head_bias = self.param("head_bias", nn.initializers.zeros, (c.vocab_size,))

    # -- pieces ---------------------------------------------------------------------------

    def embed(self, tokens, positions, rows=None):
        """Token + position + token-type embeddings, before the embedding layer norm.

        tokens: (B, S) int ids, or (B, S, V) one-hot rows (the MPC-friendly lookup: a matmul
        with the secret table instead of a gather at secret indices). positions likewise:
        (B, S) ids or (B, S, max_position_embeddings) one-hot. Returns (B, S, H).
        rows: None, or (U, H) rows of the word-embedding table (see `vocab_rows`); tokens then
        index (or one-hot select, (B, S, U)) into these rows instead of the whole vocabulary.
        """
        return (
            _lookup(self.word_embeddings if rows is None else rows, tokens)
            + _lookup(self.position_embeddings, positions)
            + self.token_type_embeddings[0]
        )

    def embed_norm(self, tokens, positions, rows=None):
        """`embed` followed by the embedding layer norm: (B, S, H)."""
        return self.embeddings_layer_norm(self.embed(tokens, positions, rows))

    def vocab_rows(self, selection):
        """(U, V) one-hot selection rows -> (U, H) rows of the word-embedding table."""
        return selection.astype(self.word_embeddings.dtype) @ self.word_embeddings

    def encode(self, embeds, mask, normed: bool = False):
        """Embedding layer norm and all encoder layers. embeds (B, S, H), mask (B, S).

        normed: embeds already went through the embedding layer norm (`embed_norm`).
        """
        x = embeds if normed else self.embeddings_layer_norm(embeds)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def head_transform(self, h):
        """The MLM head before the vocabulary projection: dense, activation, layer norm."""
        if not self.config.mlm_head:
            raise ValueError(
                "this model has no masked-LM head (mlm_head=False, an encoder-only checkpoint); "
                "use the similarity head (secfwt_jax.similarity, run.py head=similarity)"
            )
        act = layers.activation(self.config.activation)
        return self.head_layer_norm(act(self.head_dense(h)))

    def label_word_logits(self, h, label_word_ids: Sequence[int]):
        """Logits of the given vocabulary entries only. h (..., H) -> (..., C).

        Slices C rows of the tied decoder (public indices), never the full (H, V) projection.
        """
        ids = np.asarray(label_word_ids, dtype=np.int32)
        return self.head_transform(h) @ self.word_embeddings[ids].T + self.head_bias[ids]

    def prompt_positions(self, prompt_len: int):
        """The position embeddings of the L prompt vectors in "cat_pre_ln" mode: (L, H)."""
        first = self.config.position_start + 1  # <s> / [CLS] takes position_start
        return self.position_embeddings[first:first + prompt_len]

    # -- the full model ---------------------------------------------------------------------

    def __call__(
        self, input_ids, attention_mask=None, prompt=None, prompt_mode: str = "cat_pre_ln",
    ):
        """Full MLM logits. input_ids (B, S) int, attention_mask (B, S), prompt (B, L, H).

        Returns (B, S + L, V) in the "cat" modes with a prompt (the prompt rows included),
        else (B, S, V); without an MLM head (config.mlm_head False) the last hidden states,
        (B, S + L, H) or (B, S, H).
        """
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).astype(jnp.int32)
        prompt_len = 0 if prompt is None else prompt.shape[1]
        positions = position_ids(attention_mask, self.config, prompt_len, prompt_mode)
        post_ln = prompt_after_layer_norm(prompt_mode)
        x = (self.embed_norm if post_ln else self.embed)(input_ids, positions)
        x, mask = insert_prompt(
            x, attention_mask, prompt, prompt_mode, self.prompt_positions(prompt_len)
        )
        h = self.encode(x, mask, normed=post_ln)
        if not self.config.mlm_head:
            return h
        return self.head_transform(h) @ self.word_embeddings.T + self.head_bias


def _lookup(table, idx):
    if idx.ndim == 3:  # one-hot rows
        return idx.astype(table.dtype) @ table
    return jnp.take(table, idx, axis=0)


def prompt_after_layer_norm(mode: str) -> bool:
    """True for BBT's modes ("add", "cat"): the prompt joins the sequence after the embedding
    LayerNorm (modeling_roberta.py adds it to the embeddings module's normalised output)."""
    check_choice("prompt_mode", mode, PROMPT_MODES)
    return mode in ("add", "cat")


def prompt_extends_sequence(mode: str) -> bool:
    """True for the modes that insert L vectors ("cat", "cat_pre_ln"), False for the modes that
    add the prompt onto L placeholder tokens of the row ("add", "add_pre_ln")."""
    check_choice("prompt_mode", mode, PROMPT_MODES)
    return mode in ("cat", "cat_pre_ln")


def position_ids(
    attention_mask, config: ModelConfig, prompt_len: int = 0, mode: str = "cat_pre_ln"
):
    """Position ids of the text tokens (B, S): config.position_start + rank among real tokens
    (from 0), config.pad_position at padding. RoBERTa: pad_token_id + 1 + rank, pad_token_id at
    padding (Hugging Face's create_position_ids_from_input_ids); BERT: 0, 1, 2, ... In
    "cat_pre_ln" mode the L prompt vectors sit after <s>, so text tokens after <s> move up by
    L; in the other modes the prompt takes no position.

    Works on numpy (the data owner computes positions in plaintext) and on jax arrays.
    """
    check_choice("prompt_mode", mode, PROMPT_MODES)
    xp = jnp if isinstance(attention_mask, jax.Array) else np
    m = attention_mask.astype(xp.int32)
    rank = xp.cumsum(m, axis=1) * m
    if mode == "cat_pre_ln" and prompt_len:
        rank = rank + (rank > 1) * prompt_len
    pos = (rank - 1 + config.position_start) * m + config.pad_position * (1 - m)
    max_pos = int(config.max_position_embeddings) - 1
    if xp is np and pos.size and pos.max() > max_pos:
        raise ValueError(
            f"sequence too long: {int(pos.max()) - config.position_start + 1} tokens including "
            f"{prompt_len} prompt tokens; this model allows at most {config.max_seq_len}"
        )
    return pos


def insert_prompt(embeds, mask, prompt, mode: str, prompt_pos):
    """Put soft prompts into the embedded sequences.

    embeds (N, S, H), mask (N, S), prompt (N, L, H) or None, prompt_pos (L, H) position
    embeddings of the prompt slots ("cat_pre_ln" only). Returns (embeds, mask): length S + L
    for "cat" (prompt in front of <s>) and "cat_pre_ln" (prompt + positions right after <s>);
    length S for "add" / "add_pre_ln" (the prompt is added to positions 1..L, the placeholder
    tokens after <s>). Whether embeds are before or after the LayerNorm is the caller's.
    """
    check_choice("prompt_mode", mode, PROMPT_MODES)
    if prompt is None or prompt.shape[1] == 0:
        return embeds, mask
    n, s, _ = embeds.shape
    prompt_len = prompt.shape[1]
    if prompt.shape[0] != n or prompt.shape[2] != embeds.shape[2]:
        raise ValueError(
            f"prompt shape {tuple(prompt.shape)} does not match embeddings {tuple(embeds.shape)}:"
            f" expected ({n}, L, {embeds.shape[2]})"
        )
    if not prompt_extends_sequence(mode):
        if prompt_len + 1 > s:
            raise ValueError(
                f"{mode!r} prompt of length {prompt_len} needs > {prompt_len} tokens, got {s}"
            )
        pad = jnp.zeros((n, s - 1 - prompt_len, embeds.shape[2]), embeds.dtype)
        zero = jnp.zeros((n, 1, embeds.shape[2]), embeds.dtype)
        return embeds + jnp.concatenate([zero, prompt.astype(embeds.dtype), pad], axis=1), mask
    ones = jnp.ones((n, prompt_len), mask.dtype)
    if mode == "cat":  # BBT: torch.cat([prompt, embedding_output]), mask extended in front
        return (jnp.concatenate([prompt.astype(embeds.dtype), embeds], axis=1),
                jnp.concatenate([ones, mask], axis=1))
    x = jnp.concatenate([embeds[:, :1], prompt + prompt_pos, embeds[:, 1:]], axis=1)
    return x, jnp.concatenate([mask[:, :1], ones, mask[:, 1:]], axis=1)


# ---------------------------------------------------------------------------------------------
# Pure functions of (params, inputs): what the backends compile.


def init_params(config: ModelConfig, seed: int = 0) -> dict:
    """Random parameters of the given shape: normal(config.initializer_range) weights and
    embeddings, LayerNorm scale 1, zero biases."""
    ids = jnp.zeros((1, 4), jnp.int32)
    config = config.replace(rfa_trig="builtin")  # same parameters; needs no per-call masks
    return RobertaMLM(config).init(jax.random.PRNGKey(seed), ids, jnp.ones_like(ids))["params"]


def embed_fn(config: ModelConfig, prompt_len: int = 0, prompt_mode: str = "cat_pre_ln"):
    """f(params, tokens, positions) -> (B, S, H): the examples' embeddings, the frozen part.

    tokens/positions: (B, S) ids, or one-hot (B, S, V) / (B, S, max_positions) rows for the
    secure path; make positions with `position_ids(mask, config, prompt_len, prompt_mode)`.
    In BBT's modes ("add", "cat") the embedding LayerNorm is applied here too (the prompt
    joins after it), so under MPC it runs once per example set inside the secure program.
    """
    method = RobertaMLM.embed_norm if prompt_after_layer_norm(prompt_mode) else RobertaMLM.embed
    model = RobertaMLM(config)

    def f(params, tokens, positions):
        return model.apply({"params": params}, tokens, positions, method=method)

    return f


def vocab_rows_fn(config: ModelConfig):
    """f(params, selection (U, V) one-hot) -> (U, H): the word-embedding rows of a
    sub-vocabulary, selected by a (secret) one-hot matrix. With `embed_rows_fn` this is the
    two-stage lookup of the secure evaluator (secfwt_jax.tuning.evaluator)."""
    model = RobertaMLM(config)

    def f(params, selection):
        return model.apply({"params": params}, selection, method=RobertaMLM.vocab_rows)

    return f


def embed_rows_fn(config: ModelConfig, prompt_mode: str = "cat_pre_ln"):
    """f(params, rows (U, H), tokens, positions) -> (B, S, H): `embed_fn` with tokens that
    index (or one-hot select, (B, S, U)) the sub-vocabulary rows from `vocab_rows_fn`."""
    method = RobertaMLM.embed_norm if prompt_after_layer_norm(prompt_mode) else RobertaMLM.embed
    model = RobertaMLM(config)

    def f(params, rows, tokens, positions):
        return model.apply({"params": params}, tokens, positions, rows, method=method)

    return f


def tile_population(t, p: int):
    """(B, ...) -> (P * B, ...): the examples' arrays repeated for each of P candidates."""
    return jnp.broadcast_to(t[None], (p, *t.shape)).reshape(p * t.shape[0], *t.shape[1:])


def population_hidden(mdl, embeds, mask, prompt, prompt_mode: str):
    """Last hidden states (P * B, S, H) of the text rows of P candidate prompts (P, L, H) on B
    examples (embeds (B, S, H) from `embed_fn`, mask (B, S)), all in one batch: the prompt is
    inserted or added by `insert_prompt`, the encoder runs (after the embedding LayerNorm in
    BBT's modes), and the rows of an inserted prompt are dropped again so that row s is the
    example's token s in every mode. mdl: a bound RobertaMLM (inside `apply`)."""
    (b, h), (p, prompt_len) = embeds.shape[::2], prompt.shape[:2]
    prompts = jnp.broadcast_to(prompt[:, None], (p, b, prompt_len, h))
    prompts = prompts.reshape(p * b, prompt_len, h)
    x, m = insert_prompt(tile_population(embeds, p), tile_population(mask, p), prompts,
                         prompt_mode, mdl.prompt_positions(prompt_len))
    hidden = mdl.encode(x, m, normed=prompt_after_layer_norm(prompt_mode))
    if prompt_mode == "cat" and prompt_len:  # the prompt before <s>
        return hidden[:, prompt_len:]
    if prompt_mode == "cat_pre_ln" and prompt_len:  # the prompt after <s>
        return jnp.concatenate([hidden[:, :1], hidden[:, 1 + prompt_len:]], axis=1)
    return hidden


def verbalizer_fn(
    config: ModelConfig, label_word_ids: Sequence[int], prompt_mode: str = "cat_pre_ln",
    ops=PLAIN_OPS,
):
    """f(params, embeds, mask, mask_onehot, prompt, *call_inputs) -> (P, B, C) label-word logits.

    embeds (B, S, H) from `embed_fn` with the same prompt_mode (normalised in "add" / "cat");
    mask (B, S); mask_onehot (B, S) with one 1 at each
    example's <mask>; prompt (P, L, H) candidate soft prompts (L may be 0). All P x B
    sequences run as one batch; only the C label words' logits are computed.
    ops: the model's extension point (secfwt_jax.model_ops); call_inputs are its per-call
    inputs, bound by `ops.bind(*call_inputs)` (none for PLAIN_OPS; for the masked-trig ops of
    rfa_trig="masked", fresh trig masks for shape (2, P * B, heads, S', num_features), S' the
    sequence length after the prompt is inserted).
    """
    check_choice("prompt_mode", prompt_mode, PROMPT_MODES)
    label_word_ids = tuple(int(i) for i in label_word_ids)
    if not label_word_ids:
        raise ValueError("label_word_ids is empty: a verbalizer needs at least one label word")
    bad = [i for i in label_word_ids if not 0 <= i < config.vocab_size]
    if bad:
        raise ValueError(
            f"label word ids {bad} are outside the vocabulary [0, {config.vocab_size})"
        )

    def forward(mdl, embeds, mask, mask_onehot, prompt):
        (b, s, h), p = embeds.shape, prompt.shape[0]
        if prompt.shape[2] != h or mask.shape != (b, s) or mask_onehot.shape != (b, s):
            raise ValueError(
                f"mismatched shapes: embeds {embeds.shape}, mask {mask.shape}, "
                f"mask_onehot {mask_onehot.shape}, prompt {prompt.shape}; expected (B, S, H), "
                "(B, S), (B, S), (P, L, H)"
            )
        hidden = population_hidden(mdl, embeds, mask, prompt, prompt_mode)
        h_mask = jnp.einsum("ns,nsh->nh", tile_population(mask_onehot, p).astype(hidden.dtype),
                            hidden)
        return mdl.label_word_logits(h_mask, label_word_ids).reshape(p, b, -1)

    def f(params, embeds, mask, mask_onehot, prompt, *call_inputs):
        model = RobertaMLM(config, ops.bind(*call_inputs))
        return model.apply({"params": params}, embeds, mask, mask_onehot, prompt, method=forward)

    return f
