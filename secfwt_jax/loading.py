"""Hugging Face checkpoints and tokenizers -> our model.

`load_pretrained(name_or_dir)` reads a local directory with `config.json` and
`model.safetensors` (or `pytorch_model.bin`, which needs torch) in Hugging Face's PyTorch
naming, as published for FacebookAI/roberta-base and roberta-large, or downloads those files
for a hub name when the hub is reachable. Every tensor is checked: a missing one, one of the
wrong shape, one holding NaN or Inf, or one we do not know is an error that names it; an
unreadable weight file or config.json is an error naming the file.
"""

from __future__ import annotations

import json
import os
import re

import jax.numpy as jnp
import numpy as np

from .config import ModelConfig
from .model import RobertaMLM

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# Tensors a masked-LM checkpoint may carry that our model does not use (and why).
_UNUSED = (
    re.compile(r"^(roberta\.)?pooler\."),  # sentence-classification pooler
    re.compile(r"^(roberta\.)?embeddings\.position_ids$"),  # a buffer, not a weight
    re.compile(r"^lm_head\.decoder\.weight$"),  # tied to the word embeddings (checked equal)
    re.compile(r"^lm_head\.decoder\.bias$"),  # the same tensor as lm_head.bias (checked equal)
)

_LAYER_PARTS = {
    "attention.self.query": ("attention", "query"),
    "attention.self.key": ("attention", "key"),
    "attention.self.value": ("attention", "value"),
    "attention.output.dense": ("attention_output",),
    "attention.output.LayerNorm": ("attention_layer_norm",),
    "intermediate.dense": ("intermediate",),
    "output.dense": ("output",),
    "output.LayerNorm": ("output_layer_norm",),
}


def hf_param_names(config: ModelConfig) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Hugging Face tensor name -> (path in our params, transpose?) for every parameter."""
    names: dict[str, tuple[tuple[str, ...], bool]] = {
        "roberta.embeddings.word_embeddings.weight": (("word_embeddings",), False),
        "roberta.embeddings.position_embeddings.weight": (("position_embeddings",), False),
        "roberta.embeddings.token_type_embeddings.weight": (("token_type_embeddings",), False),
        "roberta.embeddings.LayerNorm.weight": (("embeddings_layer_norm", "scale"), False),
        "roberta.embeddings.LayerNorm.bias": (("embeddings_layer_norm", "bias"), False),
        "lm_head.dense.weight": (("head_dense", "kernel"), True),
        "lm_head.dense.bias": (("head_dense", "bias"), False),
        "lm_head.layer_norm.weight": (("head_layer_norm", "scale"), False),
        "lm_head.layer_norm.bias": (("head_layer_norm", "bias"), False),
        "lm_head.bias": (("head_bias",), False),
    }
    for i in range(config.num_hidden_layers):
        for hf_part, ours in _LAYER_PARTS.items():
            is_ln = ours[-1].endswith("layer_norm")
            for hf_leaf, leaf, transpose in (
                ("weight", "scale" if is_ln else "kernel", not is_ln),
                ("bias", "bias", False),
            ):
                names[f"roberta.encoder.layer.{i}.{hf_part}.{hf_leaf}"] = (
                    (f"layers_{i}", *ours, leaf), transpose
                )
    return names


def _normalise_name(name: str) -> str:
    """Old checkpoints name LayerNorm parameters gamma/beta; Hugging Face renames them too."""
    return re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))


def params_from_state_dict(state: dict[str, np.ndarray], config: ModelConfig) -> dict:
    """Map a Hugging Face PyTorch-named state dict (name -> array) onto our params pytree.

    Raises ValueError naming every missing tensor, every tensor of the wrong shape, and every
    tensor the model does not know.
    """
    state = {_normalise_name(k): np.asarray(v) for k, v in state.items()}
    expected = hf_param_names(config)
    like = _param_shapes(config)
    params: dict = {}
    missing, mismatched, non_finite = [], [], []
    for hf_name, (path, transpose) in expected.items():
        if hf_name not in state:
            missing.append(hf_name)
            continue
        value = state[hf_name].T if transpose else state[hf_name]
        want = _get(like, path)
        if tuple(value.shape) != tuple(want):
            mismatched.append(f"{hf_name}: checkpoint {tuple(value.shape)}, model {tuple(want)}")
            continue
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            non_finite.append(f"{hf_name} ({bad} of {np.size(value)} values)")
        _set(params, path, jnp.asarray(value, jnp.float32))
    unknown = [k for k in state if k not in expected and not any(p.match(k) for p in _UNUSED)]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if mismatched:
        problems.append(f"mismatched shapes: {'; '.join(mismatched)}")
    if unknown:
        problems.append(f"unknown tensors: {', '.join(unknown)}")
    if non_finite:
        problems.append(f"NaN or Inf in tensors: {', '.join(non_finite)}")
    if not problems:
        problems += _check_tied(state, params)
    if problems:
        raise ValueError("checkpoint does not fit the model: " + " | ".join(problems))
    return params


def _check_tied(state, params) -> list[str]:
    """The decoder must be the (tied) word embedding and lm_head.bias; otherwise we would
    silently compute a different model."""
    out = []
    dec = state.get("lm_head.decoder.weight")
    if dec is not None and not np.array_equal(dec, np.asarray(params["word_embeddings"])):
        out.append("lm_head.decoder.weight differs from the word embeddings (untied decoder)")
    dbias = state.get("lm_head.decoder.bias")
    if dbias is not None and not np.array_equal(dbias, np.asarray(params["head_bias"])):
        out.append("lm_head.decoder.bias differs from lm_head.bias")
    return out


def _param_shapes(config: ModelConfig) -> dict:
    import jax

    ids = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(
        lambda: RobertaMLM(config).init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids))
    )["params"]
    return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes)


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
    """Tensors of `model.safetensors` (preferred) or `pytorch_model.bin` in `directory`."""
    st = os.path.join(directory, "model.safetensors")
    if os.path.isfile(st):
        from safetensors.numpy import load_file

        try:
            return load_file(st)
        except Exception as e:  # safetensors' own error type for truncated or garbage files
            raise ValueError(
                f"{st}: not a readable safetensors file ({type(e).__name__}: {e}); a truncated "
                "download or a different format (expected Hugging Face model.safetensors)"
            ) from e
    bin_path = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(bin_path):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{bin_path} is a PyTorch pickle and needs torch (pip install torch), or convert "
                "it to model.safetensors"
            ) from e
        sd = torch.load(bin_path, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in sd.items()}
    raise FileNotFoundError(
        f"no weights in {directory!r}: expected one of {', '.join(WEIGHT_FILES)}"
    )


def _looks_like_path(name: str) -> bool:
    """Hub names are "name" or "org/name"; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def resolve_checkpoint_dir(name_or_dir: str) -> str:
    """A local directory as is; otherwise download config + weights of a hub name."""
    if os.path.isdir(name_or_dir):
        if not os.path.isfile(os.path.join(name_or_dir, "config.json")):
            raise FileNotFoundError(f"no config.json in checkpoint directory {name_or_dir!r}")
        return name_or_dir
    if _looks_like_path(name_or_dir):
        raise FileNotFoundError(f"checkpoint directory {name_or_dir!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name_or_dir, allow_patterns=["config.json", *WEIGHT_FILES]
        )
    except Exception as e:  # network errors, unknown repos, offline mode
        raise OSError(
            f"could not fetch {name_or_dir!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
            "pass a local directory with config.json and model.safetensors instead"
        ) from e


def load_pretrained(name_or_dir: str, **variant_options) -> tuple[RobertaMLM, dict]:
    """(model, params) for a hub name or a local Hugging Face RoBERTa masked-LM directory.

    variant_options override ModelConfig fields, e.g. attention="rfa", num_features=128.
    """
    directory = resolve_checkpoint_dir(name_or_dir)
    path = os.path.join(directory, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            hf = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: expected a JSON object (a Hugging Face config), got "
                         f"{type(hf).__name__}")
    try:
        config = ModelConfig.from_hf_dict(hf, **variant_options)
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: not a RoBERTa config Hugging Face writes ({type(e).__name__}: {e})"
        ) from e
    params = params_from_state_dict(read_state_dict(directory), config)
    return RobertaMLM(config), params
