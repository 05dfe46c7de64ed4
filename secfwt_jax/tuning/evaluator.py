"""The data owner's view of the servers: verbalizer logits (or losses) of candidate prompts.

One `PromptEvaluator` per (backend, model, label words). Examples are shared once
(`share_examples`, secure data ingestion in ingest.py): their embeddings are computed once
under MPC and stay secret shares in the parties; only the candidate prompts travel per
generation, and all P x B sequences of a generation run in one call. The losses are
losses.py's. The same code drives the plaintext backend (jax.jit), so a plaintext run is the
secure run's function without the cryptography.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..backend.masked_trig import call_trig_masks, model_ops
from ..config import ModelConfig
from ..model import prompt_extends_sequence, verbalizer_fn
from .ingest import (  # noqa: F401  (re-exported: callers import them from here)
    EMBED_CHUNK_ELEMENTS,
    VOCAB_BUCKET,
    ExampleSet,
    ExampleSharer,
    check_placeholders,
    one_hot,
)
from .losses import HINGE_MARGIN, LOSSES, candidate_losses  # noqa: F401  (re-exported)
from .public_mask import with_public_mask

REVEALS = ("logits", "loss")


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
        self.num_labels = len(label_word_ids)
        # an MPC program (or its emulation) keeps examples in the backend and looks tokens up
        # by one-hot products; plaintext computes the same function directly
        self.mpc_program = backend.capabilities.mpc_program
        self.sharer = ExampleSharer(
            backend, config, params_handle, prompt_len=prompt_len, prompt_mode=prompt_mode,
            vocab_bucket=vocab_bucket, public_mask=public_mask, num_labels=self.num_labels,
            account=self._account,
        )
        # rfa_trig="masked": every call gets fresh trig masks from the data owner (the dealer,
        # docs/masked_trig.md), drawn from os.urandom (never from the run seed: a seed would
        # let anyone who knows it unmask, and would replay masks across runs and resumes),
        # and opens the masked angles to the servers inside the program (the model ops)
        verbalize = verbalizer_fn(config, label_word_ids, prompt_mode,
                                  ops=model_ops(backend, config))
        self._logits = backend.compile(verbalize)

        def losses(params, embeds, mask, mask_onehot, prompts, labels_onehot, *call_inputs):
            logits = verbalize(params, embeds, mask, mask_onehot, prompts, *call_inputs)
            return candidate_losses(logits, jnp.argmax(labels_onehot, -1), loss)

        self._losses = backend.compile(losses)
        # public_mask=True (lengths revealed, as in PUMA; see tuning/public_mask.py): the mask
        # stays plaintext and is folded into one compiled program per distinct mask
        self.public_mask, self._raw = bool(public_mask), {"logits": verbalize, "loss": losses}
        self._public_fns: dict = {}
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
        """Share a Batch (input_ids, attention_mask, mask_onehot, labels; numpy) once
        (ingest.ExampleSharer.share). Raises ValueError when the prompt would not fit."""
        return self.sharer.share(batch)

    @property
    def lookups(self) -> list[dict]:
        """How each share_examples call looked its tokens up (ingest.ExampleSharer)."""
        return self.sharer.lookups

    def _trig_masks(self, examples: ExampleSet, prompts) -> tuple:
        """() or (fresh masks for this call,) when the model uses the masked trigonometry."""
        extra = self.prompt_len if prompt_extends_sequence(self.prompt_mode) else 0
        seq_len = examples.width + extra
        return call_trig_masks(self.backend, self.config, len(prompts) * examples.size, seq_len)

    def _call(self, kind: str, examples: ExampleSet, *rest):
        """Run the "logits" or "loss" program; with a public mask, its per-mask program."""
        if not (self.public_mask and self.mpc_program):
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
