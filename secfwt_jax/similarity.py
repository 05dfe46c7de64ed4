"""Sentence-embedding (similarity) head for encoders without a masked-LM head.

Class scores are cosine similarities, divided by a temperature, between an example's sentence
embedding and the embedding of one label description per class ("It was terrible." /
"It was great."; see secfwt_jax.tasks.sentences.LABEL_DESCRIPTIONS). The sentence embedding is
sentence-transformers' mean pooling (all-MiniLM-L6-v2's `1_Pooling`: the mean of the last
hidden states over the non-pad tokens, [CLS] and [SEP] included), normalised to unit length.

Soft prompts (SIMILARITY_PROMPT_MODES): the L prompt vectors are extra positions that are not
text, before [CLS] after the embedding LayerNorm (BBT's "cat") or after [CLS] through it
("cat_pre_ln"); their hidden states are left out of the pooling (the example's own tokens are
pooled, as without a prompt; the prompt acts only through attention). The add modes, which
need placeholder tokens in the sentence, are not supported by this head yet. Label
descriptions are embedded once per run, without a prompt (`label_embedding_fn`): under MPC
they stay secret in the parties, like the examples.

The mean's 1 / (number of tokens) cancels in the normalisation, so the pooled vector is the
masked sum, normalised: one reciprocal square root per sentence under MPC, no division.

Free of I/O and of MPC, like secfwt_jax.model: pure functions of (params, inputs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import ModelConfig, check_choice
from .model import RobertaMLM, population_hidden, tile_population
from .model_ops import PLAIN_OPS

# Default temperature of the cosine scores (sentence-transformers' MultipleNegativesRankingLoss
# uses scale 20 = 1 / 0.05).
TEMPERATURE = 0.05
# The prompt modes this head takes (module docstring).
SIMILARITY_PROMPT_MODES = ("cat", "cat_pre_ln")


def normalized_pool(hidden, mask):
    """Unit-length masked sum over tokens. hidden (N, S, H), mask (N, S) -> (N, H).

    Equal in direction to sentence-transformers' mean pooling (the 1 / count cancels).
    """
    pooled = jnp.einsum("ns,nsh->nh", mask.astype(hidden.dtype), hidden)
    return pooled * jax.lax.rsqrt(jnp.sum(pooled * pooled, -1, keepdims=True) + 1e-12)


def label_embedding_fn(config: ModelConfig):
    """f(params, tokens, positions, mask) -> (C, H) unit-length embeddings of the C label
    descriptions (no prompt). tokens/positions: (C, S) ids, or one-hot (C, S, V) /
    (C, S, max_positions) rows for the secure path, as `model.embed_fn` takes them."""
    model = RobertaMLM(config)

    def forward(mdl, tokens, positions, mask):
        return normalized_pool(mdl.encode(mdl.embed(tokens, positions), mask), mask)

    def f(params, tokens, positions, mask):
        return model.apply({"params": params}, tokens, positions, mask, method=forward)

    return f


def similarity_fn(
    config: ModelConfig, prompt_mode: str = "cat_pre_ln", temperature: float = TEMPERATURE,
    ops=PLAIN_OPS,
):
    """f(params, embeds, mask, mask_onehot, prompt, label_embeds, *call_inputs) -> (P, B, C).

    The same arguments as `model.verbalizer_fn`'s function (mask_onehot is not used: there is
    no <mask> token) plus label_embeds (C, H) from `label_embedding_fn`. Scores are
    cos(sentence embedding, label embedding) / temperature. ops, call_inputs: as in
    `model.verbalizer_fn` (the model's extension point, secfwt_jax.model_ops).
    """
    check_choice("prompt_mode", prompt_mode, SIMILARITY_PROMPT_MODES)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def forward(mdl, embeds, mask, prompt, label_embeds):
        (b, s, h), p = embeds.shape, prompt.shape[0]
        if prompt.shape[2] != h or mask.shape != (b, s) or label_embeds.shape[-1] != h:
            raise ValueError(
                f"mismatched shapes: embeds {embeds.shape}, mask {mask.shape}, prompt "
                f"{prompt.shape}, label_embeds {label_embeds.shape}; expected (B, S, H), (B, S), "
                "(P, L, H), (C, H)"
            )
        # the text tokens only are pooled (module docstring): the prompt rows are dropped
        hidden = population_hidden(mdl, embeds, mask, prompt, prompt_mode)
        sentence = normalized_pool(hidden, tile_population(mask, p))
        return (sentence @ label_embeds.T / temperature).reshape(p, b, -1)

    def f(params, embeds, mask, mask_onehot, prompt, label_embeds, *call_inputs):
        del mask_onehot  # no <mask> token: the whole sentence is pooled
        model = RobertaMLM(config, ops.bind(*call_inputs))
        return model.apply({"params": params}, embeds, mask, prompt, label_embeds,
                           method=forward)

    return f
