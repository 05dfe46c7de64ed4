"""Shared test inputs (not a test module): the tiny model's verbalizer problem."""

import numpy as np

from secfwt_jax.model import init_params


def verbalizer_problem(cfg, prompts=2, prompt_len=2, batch=2, seq=6):
    """(params, (embeds, mask, mask_onehot, prompt)) for `cfg`: random embeddings, the last
    example padded by 2 tokens, the mask at position 2.

    The word-embedding rows are scaled by 30 so the label-word logits are O(1) (about 2): with
    init_params' normal(0.02) rows they would be ~0.06 and a 1e-2 error bound would say little.
    """
    params = dict(init_params(cfg, seed=0))
    params["word_embeddings"] = params["word_embeddings"] * 30
    rng = np.random.default_rng(1)
    embeds = (0.5 * rng.standard_normal((batch, seq, cfg.hidden_size))).astype(np.float32)
    mask = np.ones((batch, seq), np.int32)
    mask[-1, seq - 2:] = 0
    mask_onehot = np.zeros((batch, seq), np.float32)
    mask_onehot[:, 2] = 1
    prompt = (0.1 * rng.standard_normal((prompts, prompt_len, cfg.hidden_size))).astype(np.float32)
    return params, (embeds, mask, mask_onehot, prompt)
