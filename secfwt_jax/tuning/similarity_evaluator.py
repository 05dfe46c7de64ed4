"""`PromptEvaluator` with the similarity head (secfwt_jax.similarity) instead of label words.

Everything but the head is PromptEvaluator's: examples shared once, all P x B sequences of a
generation in one call, the revealed (P, B, C) scores (or only the P losses with
reveal="loss"). The label descriptions are embedded once, at construction, in the secure
program: their tokens are the data owner's input (one-hot rows under MPC, a few hundred
tokens, so over the whole vocabulary), and their (C, H) embeddings stay secret in the parties
as a handle passed to every call.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..backend.masked_trig import model_ops
from ..model import position_ids
from ..similarity import TEMPERATURE, label_embedding_fn, similarity_fn
from .evaluator import PromptEvaluator, candidate_losses, one_hot


class SimilarityEvaluator(PromptEvaluator):
    """Evaluates candidate soft prompts by cosine similarity to label descriptions.

    descriptions: a Batch of the C label descriptions (secfwt_jax.tasks.sentences
    .encode_descriptions); temperature: the scores' divisor. Other arguments: PromptEvaluator's.
    """

    def __init__(self, backend, config, params_handle, descriptions, *,
                 temperature: float = TEMPERATURE, **options):
        num_labels = len(descriptions.labels)
        # PromptEvaluator's label-word functions are built lazily and never called here.
        super().__init__(backend, config, params_handle, tuple(range(num_labels)), **options)
        self.temperature = float(temperature)
        score = similarity_fn(config, self.prompt_mode, self.temperature,
                              ops=model_ops(backend, config))
        scores = backend.compile(score)

        def losses(params, embeds, mask, mask_onehot, prompts, label_embeds, labels_onehot,
                   *call_inputs):
            logits = score(params, embeds, mask, mask_onehot, prompts, label_embeds, *call_inputs)
            return candidate_losses(logits, jnp.argmax(labels_onehot, -1), self.loss)

        compiled_losses = backend.compile(losses)
        self.label_embeds = self._embed_descriptions(descriptions)
        self._logits = lambda p, e, m, mo, pr, *t: scores(p, e, m, mo, pr, self.label_embeds, *t)
        self._losses = lambda p, e, m, mo, pr, y, *t: compiled_losses(
            p, e, m, mo, pr, self.label_embeds, y, *t)

    def _embed_descriptions(self, batch):
        """(C, H) unit-length label embeddings: revealed numpy in plaintext, else a handle."""
        ids = np.asarray(batch.input_ids, np.int32)
        mask = np.asarray(batch.attention_mask, np.int32)
        pos = position_ids(mask, self.config)  # no prompt: positions from the start
        f = self.backend.compile(label_embedding_fn(self.config))
        if self.mpc_program:
            args = (one_hot(ids, self.config.vocab_size),
                    one_hot(pos, self.config.max_position_embeddings), mask)
        else:
            args = (ids, pos, mask)
        out, cost = f(self.params, *args, reveal=not self.mpc_program)
        self._account(cost)
        return out
