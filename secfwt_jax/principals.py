"""The principals of a secure run as separate objects: the model owner and the data owner.

The compute parties are the backend's (secfwt_jax.backend). What passes between the owners is
explicit (README "Threat model"):

- ModelOwner holds the plaintext weights. It shares them into the backend's parties
  (`share_into` -> a Handle: names of resident shares, no values on an SPU backend) and publishes
  a `ModelDisclosure`, the declared statistics about its weights (today one number: the std of
  the word-embedding table, which sets BBT's projection scale).
- DataOwner holds the data, the tuning loop and the seed. It accepts the weights only as a
  Handle and learns about them only what the ModelDisclosure says; from the parties it receives
  only the declared outputs of its calls (logits (P, B, C), or losses (P,) with reveal="loss").

In sim mode (and with ModelOwner in mp mode) these are roles of one process: the separation is
of interfaces, which tests check (tests/test_principals.py). In mp mode `share_from_own_process`
runs the model owner as its own OS process: the data owner's process never loads or receives a
weight array, only the Handle's names and shapes and the ModelDisclosure. On the plaintext
backends a Handle holds the values themselves: no secrecy there.
"""

from __future__ import annotations

import dataclasses

from .backend.common import Handle
from .tuning.loop import Tuner, TuningConfig
from .tuning.projection import embedding_std


@dataclasses.dataclass(frozen=True)
class ModelDisclosure:
    """Everything the model owner publishes about its weights besides their shapes (which the
    ModelConfig states). embedding_std: population std of all word-embedding entries (BBT's
    std_hat; the data owner's projection A has std embedding_std / (sqrt(d) sigma0))."""

    embedding_std: float


class ModelOwner:
    """Holds a checkpoint's weights (a params pytree of arrays for `config`)."""

    def __init__(self, config, params):
        self.config = config
        self._params = params
        self.shared_into: list[str] = []  # repr of every backend it shared the weights into

    def disclosure(self) -> ModelDisclosure:
        """The declared disclosure (README "Threat model")."""
        return publish(self._params)

    def share_into(self, backend) -> Handle:
        """Secret-share the weights into `backend`'s parties once; returns the Handle that
        stands for them in calls (each SPU party holds only its own share)."""
        handle = backend.put(self._params, owner="model")
        self.shared_into.append(repr(backend))
        return handle


def publish(params) -> ModelDisclosure:
    """The model owner's declared disclosure of a params pytree."""
    return ModelDisclosure(embedding_std=embedding_std(params["word_embeddings"]))


def share_from_own_process(backend, loader, *loader_args) -> tuple[Handle, ModelDisclosure]:
    """mp mode: the model owner as a separate OS process runs loader(*loader_args) (a
    module-level function returning params, e.g. secfwt_jax.init_params or
    secfwt_jax.load_pretrained), sends each party only its shares and publishes `publish`'s
    disclosure. This process receives (Handle, ModelDisclosure) and no weight array."""
    return backend.put_from_owner_process(loader, loader_args, disclose=publish)


class DataOwner:
    """Holds the data and runs the tuning loop (a Tuner) against weights it cannot read.

    weights: the Handle from ModelOwner.share_into (arrays are refused: the data owner never
    holds a weight array). disclosure: the ModelOwner's ModelDisclosure. Other keywords go to
    Tuner (metric_fn, main_metric, run_dir, progress).
    """

    def __init__(self, cfg: TuningConfig, backend, model_config, weights: Handle,
                 disclosure: ModelDisclosure, label_word_ids, **tuner_kw):
        if not isinstance(weights, Handle):
            raise TypeError(
                f"DataOwner takes the weights as a backend Handle (ModelOwner.share_into), got "
                f"{type(weights).__name__}: the data owner never holds weight arrays"
            )
        if not isinstance(disclosure, ModelDisclosure):
            raise TypeError(
                f"disclosure must be a ModelDisclosure, got {type(disclosure).__name__}"
            )
        self.disclosure = disclosure
        self.tuner = Tuner(cfg, backend, model_config, weights, label_word_ids,
                           embed_std=disclosure.embedding_std, **tuner_kw)

    def run(self, train, dev=None, test=None, **kw):
        """Tuner.run: tune on train, select on dev, report on test; returns the summary."""
        return self.tuner.run(train, dev, test, **kw)
