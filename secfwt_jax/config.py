"""Model configuration: one frozen dataclass, presets by name, Hugging Face `config.json` import.

The layer variants (attention, activation, layer norm) are chosen here by name, so the same
config gives the same function in plaintext and under MPC.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

ATTENTIONS = ("softmax", "softmax_puma", "rfa", "favor", "2quad")
ACTIVATIONS = ("gelu", "gelu_tanh", "gelu_puma", "gelu_puma_fused", "gelu_even", "quad")
LAYERNORMS = ("exact",)
RFA_FEATURE_KINDS = ("iid", "orthogonal")
RFA_TRIGS = ("builtin", "masked")
# Where the soft prompt enters (secfwt_jax.model): Black-Box Tuning's "add" (onto the
# placeholder tokens after <s>, after the embedding LayerNorm) and "cat" (before <s>, after the
# LayerNorm, no position embeddings); ours "cat_pre_ln" (after <s>, through the LayerNorm, with
# positions) and "add_pre_ln" (onto the placeholder tokens, through the LayerNorm).
PROMPT_MODES = ("add", "cat", "cat_pre_ln", "add_pre_ln")
# Encoder families by Hugging Face model_type: they differ only in the embedding sub-module
# (RoBERTa's position ids start after the pad id; BERT's start at 0).
MODEL_TYPES = ("roberta", "xlm-roberta", "bert")


def check_choice(kind: str, value: Any, accepted: tuple) -> None:
    """Raise ValueError naming `value` and the accepted names when `value` is not in `accepted`."""
    if value not in accepted:
        raise ValueError(f"unknown {kind} {value!r}; accepted: {', '.join(map(str, accepted))}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and layer variants of a RoBERTa or BERT encoder with (optionally) its masked-LM head.

    Field names follow Hugging Face's RobertaConfig / BertConfig where one exists. RoBERTa's
    position ids start at `pad_token_id + 1`, so `max_position_embeddings` (514 for the
    published models) allows sequences of `max_position_embeddings - pad_token_id - 1` tokens
    (512); BERT's start at 0 (`position_start`). mlm_head: False for an encoder-only checkpoint
    (e.g. a sentence-transformers BertModel), which then needs the similarity head
    (secfwt_jax.similarity) instead of a label-word verbalizer.
    """

    model_type: str = "roberta"
    mlm_head: bool = True

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    # std of the random normal weights of init_params (Hugging Face's name); loaded
    # checkpoints do not use it.
    initializer_range: float = 0.02
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    mask_token_id: int = 50264
    # Layer variants, by name (see secfwt_jax.layers).
    attention: str = "softmax"
    activation: str = "gelu"
    layernorm: str = "exact"
    # Random-feature attention (rfa / favor) options.
    num_features: int = 64
    feature_kind: str = "orthogonal"
    normalize_qk: bool = False
    # rfa's cos/sin: "builtin" (the backend's functions) or "masked" (one-round masked
    # trigonometry of secfwt_jax.secure_trig, reached through the ops hook, model_ops.py).
    rfa_trig: str = "builtin"
    # rfa only: the same function with two secret products fewer per layer (the keys' scale
    # times the mask per key, |k|^2 from the normalisation's sum; layers.rfa_attention). A
    # named option; the default computes as the committed records did.
    rfa_lean: bool = False
    feature_seed: int = 0
    # PUMA-style softmax: inputs below -clip are treated as -clip (exp(-14) ~ 8e-7).
    softmax_clip: float = 14.0

    @property
    def masked_trig(self) -> bool:
        """True when the model's forward takes per-call trig masks (rfa with masked cos/sin)."""
        return self.attention == "rfa" and self.rfa_trig == "masked"

    def __post_init__(self):
        check_choice("attention", self.attention, ATTENTIONS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("layernorm", self.layernorm, LAYERNORMS)
        check_choice("feature_kind", self.feature_kind, RFA_FEATURE_KINDS)
        check_choice("rfa_trig", self.rfa_trig, RFA_TRIGS)
        check_choice("model_type", self.model_type, MODEL_TYPES)
        if self.rfa_lean and self.attention != "rfa":
            raise ValueError(f"rfa_lean=True is an option of attention 'rfa', not of "
                             f"{self.attention!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("num_features", "num_hidden_layers", "hidden_size", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_start(self) -> int:
        """Position id of the first token: RoBERTa pad_token_id + 1 (Hugging Face's
        create_position_ids_from_input_ids), BERT 0."""
        return 0 if self.model_type == "bert" else self.pad_token_id + 1

    @property
    def pad_position(self) -> int:
        """Position id given to padding (masked out, so only parity with Hugging Face cares):
        RoBERTa pad_token_id, BERT 0."""
        return 0 if self.model_type == "bert" else self.pad_token_id

    @property
    def max_seq_len(self) -> int:
        """Longest token sequence (soft prompt included) the position table allows."""
        return self.max_position_embeddings - self.position_start

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        """A named shape (`tiny`, `roberta-base`, `roberta-large`) with optional overrides."""
        check_choice("model preset", name, tuple(PRESETS))
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf_dict(cls, hf: dict, **overrides) -> ModelConfig:
        """Build from a Hugging Face RobertaConfig or BertConfig dictionary (the contents of
        `config.json`); the encoder family comes from its `model_type`."""
        model_type = hf.get("model_type", "roberta")
        check_choice("model_type", model_type, MODEL_TYPES)
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"unsupported position_embedding_type {hf['position_embedding_type']!r}; "
                "accepted: absolute"
            )
        act = hf.get("hidden_act", "gelu")
        hf_acts = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
        if act not in hf_acts:
            raise ValueError(f"unsupported hidden_act {act!r}; accepted: {', '.join(hf_acts)}")
        keys = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
            "initializer_range",
            "pad_token_id", "bos_token_id", "eos_token_id",
        )
        fields = {k: hf[k] for k in keys if k in hf and hf[k] is not None}
        fields["activation"] = hf_acts[act]
        fields["model_type"] = model_type
        if model_type == "bert":
            # BertConfig carries no special-token ids but the pad id; every published BERT
            # WordPiece vocabulary (uncased and cased) has [CLS] 101, [SEP] 102, [MASK] 103.
            # run.py replaces them with the tokenizer's own ids.
            fields.setdefault("bos_token_id", 101)
            fields.setdefault("eos_token_id", 102)
            fields["mask_token_id"] = hf.get("mask_token_id", 103)
        else:
            # Hugging Face configs do not carry the <mask> id; RoBERTa's is the last entry.
            fields["mask_token_id"] = hf.get("mask_token_id", fields.get("vocab_size", 50265) - 1)
        return cls(**{**fields, **overrides})

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides) -> ModelConfig:
        with open(path) as f:
            return cls.from_hf_dict(json.load(f), **overrides)

    @classmethod
    def from_name(cls, name: str, **overrides) -> ModelConfig:
        """A preset name, a directory holding `config.json`, or a path to a `config.json`."""
        if name in PRESETS:
            return cls.preset(name, **overrides)
        path = os.path.join(name, "config.json") if os.path.isdir(name) else name
        if os.path.isfile(path):
            return cls.from_json(path, **overrides)
        raise ValueError(
            f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}) and no config.json there"
        )


PRESETS: dict[str, dict] = {
    # Tests: 2 layers, hidden 32, a small vocabulary (token ids of a real tokenizer need the
    # real vocabulary size: see ModelConfig.replace(vocab_size=...)).
    "tiny": dict(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, mask_token_id=999, num_features=16,
    ),
    "roberta-base": dict(),
    "roberta-large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    ),
}
