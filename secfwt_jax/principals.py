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
    std_hat; the data owner's projection A has std embedding_std / (sqrt(d) sigma0)).

    With the model owner as its own process (run.py, mode=mp) also: config, the ModelConfig of
    a checkpoint (its architecture and shapes; None for a preset, which the data owner names
    itself), and planted, the planted task's splits (a test fixture whose labels the model
    owner makes with its weights: {"train", "dev", "test": Batch, "label_word_ids"}; None for
    a real task, whose data are the data owner's)."""

    embedding_std: float
    config: object | None = None
    planted: dict | None = None


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


# ---------------------------------------------------------------------------------------------
# The model owner's side of a run (experiments/run.py in mode=mp): module-level, so that the
# model-owner process (started with 'spawn') can run them.


def load_model(spec: dict):
    """(ModelConfig, params) for spec {"path": checkpoint dir or None, "name": preset,
    "overrides": ModelConfig fields, "init_seed": int} (run.py's model_spec)."""
    from .config import ModelConfig
    from .loading import load_pretrained
    from .model import init_params

    if spec["path"]:
        model, params = load_pretrained(spec["path"], **spec["overrides"])
        return model.config, params
    config = ModelConfig.from_name(spec["name"], **spec["overrides"])
    return config, init_params(config, seed=int(spec["init_seed"]))


def owner_params(spec: dict):
    """The model-owner process's loader: the params of load_model(spec)."""
    return load_model(spec)[1]


def publish_for_run(spec: dict, planted: dict | None, params) -> ModelDisclosure:
    """The model owner's declared disclosure for a run of `spec`: the embedding std; a
    checkpoint's ModelConfig; with planted {"tcfg": TuningConfig, "kwargs": make_planted's
    keywords} the planted task made with the weights (ModelDisclosure says why)."""
    config = None
    if spec["path"]:
        config = checkpoint_config(spec, params)
    out = {}
    if planted is not None:
        from .tasks.planted import make_planted
        from .tuning.loop import tuning_projection

        cfg = config or load_config(spec)
        A = tuning_projection(planted["tcfg"], cfg, params)
        p = make_planted(cfg, params, A, **planted["kwargs"])
        out = dict(train=p.train, dev=p.dev, test=p.test, label_word_ids=p.label_word_ids)
    return ModelDisclosure(embedding_std(params["word_embeddings"]), config, out or None)


def load_config(spec: dict):
    """The ModelConfig of a preset spec (no weights needed: the data owner can make it)."""
    from .config import ModelConfig

    if spec["path"]:
        raise ValueError("a checkpoint's ModelConfig is the model owner's (ModelDisclosure)")
    return ModelConfig.from_name(spec["name"], **spec["overrides"])


def checkpoint_config(spec: dict, params):
    """A checkpoint's ModelConfig as load_pretrained makes it (its config.json with the
    overrides; the MLM head as present in params)."""
    import json
    import os

    from .config import ModelConfig
    from .loading import resolve_checkpoint_dir

    with open(os.path.join(resolve_checkpoint_dir(spec["path"]), "config.json")) as f:
        config = ModelConfig.from_hf_dict(json.load(f), **spec["overrides"])
    if "mlm_head" not in spec["overrides"]:
        config = config.replace(mlm_head="head_bias" in params)
    return config
