"""The experiment toolkit: what every script in experiments/ shares, and nothing else.

A script is a Hydra app over a structured config (a dataclass subclassing `AppConfig`):

    @dataclasses.dataclass
    class Config(common.AppConfig):
        seq_len: int = 16          # every field documented where it is declared
        out: str = "results/x"

    @common.hydra_app(Config, "x")
    def main(cfg) -> None:
        ...
        common.write_outputs(cfg.out, "x", record, markdown_text)

    if __name__ == "__main__":
        main()

Scripts run as `python experiments/x.py key=value ...` (so `import common` finds this file:
Python puts the script's folder on sys.path; secfwt_jax is installed). No experiments/ file
imports another script; what two scripts share lives here or in the library.

Legacy arguments (the argparse command lines in README.md and in results/ records keep
working): before Hydra parses the command line, `legacy_overrides` rewrites each `--key value`
whose key (dashes read as underscores) names a field of the script's config into `key=value`;
`--flag` of a bool field into `flag=true`; `--key a b` or `--key a,b` of a list field into
`key=[a,b]` (no value: `key=[]`). Values that Hydra's grammar would misread are quoted. Any
other argument (Hydra's own `--cfg job`, `-m`, `key=value` overrides) passes unchanged; an
unknown `--key` is refused, naming the accepted keys. The record's command is the line as typed
(`command_line()`), not its translation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import shlex
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf")
# the ModelConfig fields a method config (conf/method/*.yaml) sets: run.py hands them to the
# model owner, bench_iteration and ablate_runtime read them from the method they measure
METHOD_LAYER_KEYS = ("attention", "activation", "num_features", "feature_kind", "normalize_qk",
                     "rfa_trig", "rfa_lean")
_ARGV: list[str] | None = None  # the command line as typed, before legacy_overrides
_CONF_DIRS: dict[str, str | None] = {}  # config name -> its search path (None: no groups)
# Hydra's own command-line flags (`python x.py --help`): never read as legacy arguments
HYDRA_FLAGS = ("--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--run",
               "--multirun", "--shell-completion", "--config-path", "--config-name",
               "--config-dir", "--experimental-rerun", "--info")
# Hydra's flags that take a value (`--cfg job`, `-cn NAME`)
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                     "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i")


# ---------------------------------------------------------------------------------------------
# Configs and the Hydra entry


def hydra_defaults(*groups: dict) -> Callable[[], list]:
    """A `defaults` factory for an AppConfig: the dataclass itself first (`_self_`, so a group
    such as `{"model": "tiny"}` fills its typed field, then the command line overrides both),
    and Hydra's logging left to Python's defaults (no <job>.log file beside the results)."""
    return lambda: ["_self_", *groups, {"override hydra/job_logging": "none"},
                    {"override hydra/hydra_logging": "none"}]


def hydra_settings(run_dir: str = ".") -> Callable[[], dict]:
    """A `hydra` factory for an AppConfig: Hydra's run directory (default "."; scripts with an
    `out` field write there, not into Hydra's folder), no .hydra/ copy, no chdir."""
    return lambda: {"run": {"dir": run_dir}, "output_subdir": None, "job": {"chdir": False}}


@dataclasses.dataclass
class AppConfig:
    """Base of every script's structured config. `defaults` and `hydra` are read by Hydra and
    are not part of the composed config (`--cfg job` does not show them); a subclass that
    changes them keeps their types (`defaults: list[Any] = field(default_factory=
    hydra_defaults({"model": "tiny"}))`, `hydra: Any = field(default_factory=
    hydra_settings("outputs/x"))`)."""

    defaults: list[Any] = dataclasses.field(default_factory=hydra_defaults())
    hydra: Any = dataclasses.field(default_factory=hydra_settings())


@dataclasses.dataclass
class ModelGroup:
    """The `model` config group (conf/model/*.yaml): a preset with random weights, or a
    checkpoint directory (`model=local model.path=DIR`)."""

    name: str = "tiny"
    path: str | None = None
    layers: int | None = None
    initializer_range: float = 0.02
    max_position_embeddings: int | None = None
    init_seed: int = 0


def hydra_app(config_class: type, name: str, positional: str | None = None) -> Callable:
    """Decorator making `fn(cfg: DictConfig)` the script's Hydra entry point.

    Registers `config_class` in Hydra's ConfigStore as `name`, and returns
    `main(cfg=None, argv=None)`: called with a config (tests), it runs `fn(cfg)`; with `argv`
    (a command line as a list, tests), it runs `fn` on the config composed from it (legacy
    arguments translated, `command_line()` = that line); with neither, it translates legacy
    arguments in sys.argv (`legacy_overrides`) and runs `fn` under `hydra.main`.
    `positional`: a list field that takes the bare arguments of an argparse form
    (`x.py a.json b.json --out F` -> `records=[a.json,b.json] out=F`). The config groups under
    conf/ are searched only when the config's defaults name one (else a field called `model`
    would be read as the group)."""
    hints = typing.get_type_hints(config_class)
    if hints.get("hydra") is not Any or hints.get("defaults") != list[Any]:
        # a `hydra: dict` field replaces Hydra's own node (hydra.mode is lost: an
        # AssertionError deep in Hydra), so the two fields must keep AppConfig's types
        raise TypeError(f"{config_class.__name__}: declare `defaults: list[Any]` and "
                        f"`hydra: Any` (as AppConfig does), got {hints.get('defaults')} and "
                        f"{hints.get('hydra')}")
    ConfigStore.instance().store(name=name, node=config_class)
    uses_groups = any(isinstance(d, dict) and not any(k.startswith("override ") for k in d)
                      for d in config_class().defaults)
    _CONF_DIRS[name] = CONF_DIR if uses_groups else None

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable:
        @functools.wraps(fn)
        def main(cfg: DictConfig | None = None, argv: list[str] | None = None):
            global _ARGV
            if cfg is not None:
                return fn(cfg)
            if argv is not None:
                script = os.path.relpath(sys.modules[fn.__module__].__file__)
                before, _ARGV = _ARGV, [script, *argv]
                try:
                    return fn(load_config(name, legacy_overrides(argv, config_class,
                                                                 positional)))
                finally:
                    _ARGV = before
            _ARGV = list(sys.argv)
            sys.argv = [sys.argv[0], *legacy_overrides(sys.argv[1:], config_class, positional)]
            logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
            return hydra.main(version_base=None, config_path=_CONF_DIRS[name],
                              config_name=name)(fn)()

        main.config_class = config_class
        return main

    return decorate


def load_config(name: str, overrides: Iterable[str] = ()) -> DictConfig:
    """The config `name` (registered by importing its script) composed with `overrides`, as
    the script's main receives it (for tests and notebooks)."""
    from hydra import compose, initialize, initialize_config_dir

    conf_dir = _CONF_DIRS.get(name, CONF_DIR)
    init = (initialize(config_path=None, version_base=None) if conf_dir is None
            else initialize_config_dir(config_dir=conf_dir, version_base=None))
    with init:
        return compose(config_name=name, overrides=list(overrides))


def legacy_overrides(args: list[str], config_class: type,
                     positional: str | None = None) -> list[str]:
    """`args` with every legacy `--key value` / `--flag` / `--key a b` naming a field of
    `config_class` rewritten as a Hydra override (rule in the module docstring); with
    `positional` (a list field), the bare arguments (neither `-...`, `key=value` nor the value
    of a flag) become `positional=[...]`."""
    hints = typing.get_type_hints(config_class)
    out, bare, i = [], [], 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        i += 1
        if arg in HYDRA_VALUE_FLAGS and i < len(args) and not args[i].startswith("-"):
            out += [arg, args[i]]  # `--cfg job`: the value is Hydra's, not a positional
            i += 1
            continue
        if positional and not arg.startswith("-") and not _is_override(arg):
            bare.append(arg)
            continue
        if not arg.startswith("--") or arg.partition("=")[0] in HYDRA_FLAGS:
            out.append(arg)
            continue
        if key not in hints or key in ("defaults", "hydra"):
            accepted = [k for k in hints if k not in ("defaults", "hydra")]
            raise SystemExit(f"unknown argument {arg!r}; accepted: key=value overrides of "
                             f"{', '.join(accepted)} (legacy form: --key value), or Hydra's "
                             f"flags {', '.join(HYDRA_FLAGS)}")
        kind = _field_kind(hints[key])
        if eq:
            values = [value]
        elif kind == "bool":
            values = ["true"]
        else:
            values = []
            while i < len(args) and not (args[i].startswith("--") or _is_override(args[i])):
                values.append(args[i])
                i += 1
                if kind != "list":
                    break
        if kind == "list":
            items = [v for a in values for v in a.split(",") if v != ""]
            out.append(f"{key}=[{','.join(_hydra_value(v) for v in items)}]")
        elif len(values) != 1:
            raise SystemExit(f"{arg}: expected one value, got {len(values)} ({values})")
        else:
            out.append(f"{key}={_hydra_value(values[0])}")
    if bare:
        out.insert(0, f"{positional}=[{','.join(_hydra_value(v) for v in bare)}]")
    return out


def peek_argument(key: str, argv: list[str] | None = None) -> str | None:
    """The value given to `key` on the command line (`key=V`, `--key V` or `--key=V`), or
    None: for settings a script must apply before Hydra runs (e.g. thread counts read by
    numpy and jax at import)."""
    argv = sys.argv[1:] if argv is None else argv
    legacy = "--" + key.replace("_", "-")
    for i, a in enumerate(argv):
        if a == legacy and i + 1 < len(argv):
            return argv[i + 1]
        for prefix in (key + "=", legacy + "="):
            if a.startswith(prefix):
                return a[len(prefix):]
    return None


def _is_override(arg: str) -> bool:
    """Whether `arg` reads as a Hydra `key=value` override (a dotted key, then "="), not as a
    legacy value that merely contains "=" (e.g. 'rfa M=64')."""
    return re.match(r"[+~]{0,2}[\w.@/\-]+=", arg) is not None


def _field_kind(hint) -> str:
    """'list', 'bool' or 'scalar' for a field's type (Optional[...] unwrapped)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if hint is bool:
        return "bool"
    return "list" if typing.get_origin(hint) in (list, tuple) or hint in (list, tuple) else "scalar"


def _hydra_value(value: str) -> str:
    """`value` as Hydra's override grammar reads it literally (quoted unless a plain token)."""
    if re.fullmatch(r"[\w./:+\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran this script, as typed (legacy arguments untranslated), the
    script's path relative to the working directory: `python experiments/x.py a=1`."""
    argv = argv if argv is not None else (_ARGV if _ARGV is not None else sys.argv)
    return "python " + shlex.join([os.path.relpath(argv[0]), *argv[1:]])


def run_dir() -> str:
    """Hydra's run directory of this job (hydra.run.dir), created."""
    from hydra.core.hydra_config import HydraConfig

    path = HydraConfig.get().runtime.output_dir
    os.makedirs(path, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# Writers


def write_config(directory: str, cfg: DictConfig, filename: str = "config.yaml") -> str:
    """The resolved config as YAML in `directory` (created); returns its path."""
    return write_text(os.path.join(directory, filename), OmegaConf.to_yaml(cfg, resolve=True))


def write_text(path: str, text: str) -> str:
    """`text` to `path` (folders created); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def write_json(path: str, obj) -> str:
    """`obj` as JSON (indent 1, the house format of results/) to `path`; returns the path."""
    return write_text(path, json.dumps(obj, indent=1))


def read_json(path: str, default=None):
    """The JSON in `path`, or `default` when there is no such file (records a rerun extends)."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def write_outputs(directory: str, stem: str, obj, markdown: str | None = None,
                  cfg: DictConfig | None = None) -> None:
    """DIR/STEM.json (obj), DIR/STEM.md (markdown) and, with a config, DIR/STEM.config.yaml."""
    write_json(os.path.join(directory, stem + ".json"), obj)
    if markdown is not None:
        write_text(os.path.join(directory, stem + ".md"), markdown)
    if cfg is not None:
        write_config(directory, cfg, stem + ".config.yaml")


def append_jsonl(path: str, record: dict) -> None:
    """One JSON line appended to `path` (folders created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: str) -> list[dict]:
    """Every record of a JSON-lines file; [] when it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def markdown_table(header: Iterable[str], rows: Iterable[Iterable]) -> list[str]:
    """The lines of a markdown table: `| h1 | h2 |`, `|---|---|`, then one line per row (cells
    formatted by the caller, str() applied)."""
    header = list(header)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


# ---------------------------------------------------------------------------------------------
# Choosing records


def median_item(items: list, key: Callable):
    """The item whose key is the median (upper middle for an even count): the representative
    call of a few repeats, robust to one slow call on a shared machine."""
    return sorted(items, key=key)[len(items) // 2]


def latest_per_key(records: Iterable[dict], key: Callable[[dict], Any],
                   ok: Callable[[dict], bool] = lambda r: r.get("status") == "ok") -> dict:
    """key(record) -> its latest record by "unix_time", an `ok` one when there is one (a later
    failed rerun does not hide a measured result)."""
    out: dict = {}
    for r in sorted(records, key=lambda r: r.get("unix_time", 0)):
        k = key(r)
        if ok(r) or not ok(out.get(k, {})):
            out[k] = r
    return out


# ---------------------------------------------------------------------------------------------
# The programs of bench_iteration that bench_wan also runs (to count their rounds): the two
# parts of an SFT step. `cfg` holds bench_iteration's fields (model group, seq_len, batch,
# layers, seed, num_features, num_labels, learning_rate; ITERATION_DEFAULTS for a caller
# without its Config).

ITERATION_DEFAULTS = dict(seed=0, num_features=64, num_labels=2, learning_rate=1e-2)


def iteration_model_config(cfg, layers: int | None, **over):
    """ModelConfig of cfg.model's preset with bench_iteration's initializer and random-feature
    count, `layers` encoder layers (None: the preset's) and the layer settings `over`."""
    from secfwt_jax.config import ModelConfig

    over = dict(initializer_range=float(cfg.model.initializer_range),
                num_features=int(cfg.num_features), **over)
    if layers:
        over["num_hidden_layers"] = int(layers)
    return ModelConfig.preset(cfg.model.name, **over)


def iteration_inputs(cfg, config, params, prompt_len: int):
    """(embeds (B, S-L, H), mask, mask_onehot, labels_onehot (B, C)) numpy, and label words
    (random: rows `<s> t.. <mask> t.. </s>`, no padding)."""
    import numpy as np

    rng = np.random.default_rng(int(cfg.seed))
    b, text_len = int(cfg.batch), int(cfg.seq_len) - prompt_len
    ids, mask, mask_onehot = random_examples(config, rng, b, text_len)
    embeds = embed_examples(config, params, ids, mask, prompt_len)
    c = int(cfg.num_labels)
    labels = np.eye(c, dtype=np.float32)[rng.integers(0, c, b)]
    words = [int(w) for w in rng.choice(np.arange(3, config.vocab_size - 1), c, replace=False)]
    return (embeds, mask, mask_onehot, labels), words


def param_slices(tree, divisor: int):
    """Every leaf flattened and cut to its first ceil(n / divisor) entries: a pytree with the
    same leaves (so the same kernels and rounds) and about 1/divisor of the entries."""
    import jax
    import numpy as np

    return jax.tree_util.tree_map(
        lambda x: np.asarray(x).reshape(-1)[: -(-np.size(x) // divisor)], tree)


def n_entries(tree) -> int:
    import jax
    import numpy as np

    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def sft_grad_program(cfg, be, layers: int | None):
    """(compiled fn, args) of sft_grad (forward + backward of an SFT step) on a model with
    `layers` encoder layers, its weights put on `be` (args[0])."""
    from secfwt_jax.baselines import sft_grad_fn
    from secfwt_jax.model import init_params

    config = iteration_model_config(cfg, layers)
    params = init_params(config, seed=int(cfg.seed))
    (embeds, mask, mask_onehot, labels), words = iteration_inputs(cfg, config, params, 0)
    return (be.compile(sft_grad_fn(config, words)),
            (be.put(params, owner="model"), embeds, mask, mask_onehot, labels))


def sft_trainable(cfg):
    """The parameters an SFT step updates (all but the embedding tables) of cfg's whole model,
    random (init_params(cfg.seed)); sft_update is measured on param_slices of them."""
    from secfwt_jax.baselines import split_params
    from secfwt_jax.model import init_params

    config = iteration_model_config(cfg, cfg.layers)
    return split_params(init_params(config, seed=int(cfg.seed)))[0]


def sft_update_program(cfg, be, trainable):
    """(compiled fn, args) of sft_update (the Adam part of an SFT step) on the pytree
    `trainable` (element-wise: no examples, only parameters, moments and gradients, all
    secret, put on `be`)."""
    import jax
    import numpy as np

    from secfwt_jax.baselines import fixed_point_adam, pack_state, sft_update_fn

    rng = np.random.default_rng(int(cfg.seed) + 1)
    opt = fixed_point_adam(float(cfg.learning_rate))
    grads = jax.tree_util.tree_map(
        lambda x: (1e-3 * rng.standard_normal(x.shape)).astype(np.float32), trainable)
    args = (be.put(trainable), be.put(pack_state(opt.init(trainable))), be.put(grads))
    return be.compile(sft_update_fn(opt)), args


# ---------------------------------------------------------------------------------------------
# Models and random inputs


def build_model(model, seed: int, layers: int | None = None, **overrides):
    """(ModelConfig, params, weights description) for a preset name or a `model` group.

    `model`: a preset name (its own initializer_range) or a ModelGroup-like config (its
    initializer_range and max_position_embeddings; `path` loads a checkpoint, where `layers`
    is refused). Random weights come from init_params(seed) (plaintext parts use the seed)."""
    from secfwt_jax import ModelConfig, init_params, load_pretrained

    if isinstance(model, str):
        name = model
    else:
        name = model.name
        if model.path:
            if layers:
                raise ValueError(f"layers={layers} applies to presets only, not to the "
                                 f"checkpoint {model.path}")
            loaded, params = load_pretrained(model.path, **overrides)
            return loaded.config, params, f"checkpoint {model.path}"
        if model.max_position_embeddings:
            overrides["max_position_embeddings"] = int(model.max_position_embeddings)
        overrides["initializer_range"] = float(model.initializer_range)
    if layers:
        overrides["num_hidden_layers"] = int(layers)
    config = ModelConfig.from_name(name, **overrides)
    weights = (f"random: init_params(seed={seed}), normal({config.initializer_range}) weights "
               "(no pretrained checkpoint)")
    return config, init_params(config, seed=int(seed)), weights


def variant_model(cfg, variant: dict):
    """(ModelConfig, params, weights description) for a query config `cfg` (fields model,
    layers, seed, num_features, normalize_qk) and a variant {attention, activation (None: the
    model's), rfa_trig}: the model group's preset or checkpoint with the variant's layer."""
    over = dict(
        attention=variant["attention"], rfa_trig=variant["rfa_trig"],
        num_features=int(cfg.num_features), normalize_qk=bool(cfg.normalize_qk),
    )
    if variant["activation"]:
        over["activation"] = variant["activation"]
    layers = cfg.layers if cfg.layers is not None else cfg.model.layers
    return build_model(cfg.model, int(cfg.seed), layers, **over)


def query_inputs(cfg, config, params):
    """Label words, and (embeds (B, S-L, H), mask, mask_onehot, prompt (P, L, H)) as numpy for
    a query config `cfg` (seed, batch, prompts, prompt_len, seq_len = S including the L prompt
    tokens, num_labels): random examples and prompts from `cfg.seed`, C random label words."""
    import numpy as np

    rng = np.random.default_rng(int(cfg.seed))
    prompt_len = int(cfg.prompt_len)
    text_len = int(cfg.seq_len) - prompt_len
    if text_len < 3:
        raise ValueError(f"seq_len {cfg.seq_len} leaves {text_len} text tokens; need >= 3")
    if int(cfg.seq_len) > config.max_seq_len:
        raise ValueError(f"seq_len {cfg.seq_len} exceeds the model's {config.max_seq_len}")
    ids, mask, mask_onehot = random_examples(config, rng, int(cfg.batch), text_len)
    embeds = embed_examples(config, params, ids, mask, prompt_len)
    prompt = random_prompts(rng, int(cfg.prompts), prompt_len, config.hidden_size)
    words = rng.choice(np.arange(3, config.vocab_size - 1), int(cfg.num_labels), replace=False)
    return [int(w) for w in words], (embeds, mask, mask_onehot, prompt)


def query_functions(config, words, backend, cfg):
    """(secure function, its extra args, plaintext function, its extra args) of one query, the
    verbalizer logits: the extra args are one call's trig masks for a model with
    rfa_trig="masked" (identity masks in plaintext), else ()."""
    from secfwt_jax.backend import make_backend
    from secfwt_jax.backend.masked_trig import call_trig_masks, model_ops
    from secfwt_jax.model import verbalizer_fn

    n_seq, seq_len = int(cfg.prompts) * int(cfg.batch), int(cfg.seq_len)
    plain = make_backend("plaintext")
    secure = verbalizer_fn(config, words, ops=model_ops(backend, config))
    masks = call_trig_masks(backend, config, n_seq, seq_len)  # from os.urandom
    plain_masks = call_trig_masks(plain, config, n_seq, seq_len)
    return secure, masks, verbalizer_fn(config, words, ops=model_ops(plain, config)), plain_masks


def random_examples(config, rng, batch: int, text_len: int, padded: bool = False):
    """Random token ids (batch, text_len) with their masks, numpy:
    (ids int32, attention mask int32, mask_onehot float32 (1 at the <mask> token)).

    Rows are `<s> t.. <mask> t.. </s>`, <mask> at the middle; `padded`: each row's length
    uniform in [max(3, text_len // 2), text_len], </s> at its end, then <pad>."""
    import numpy as np

    b, s = batch, text_len
    ids = rng.integers(3, config.vocab_size - 1, (b, s)).astype(np.int32)
    if padded:
        lengths = rng.integers(max(3, s // 2), s + 1, b)
    else:
        lengths = np.full(b, s)
    mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = config.bos_token_id
    ids[np.arange(b), lengths - 1] = config.eos_token_id
    ids[mask == 0] = config.pad_token_id
    mask_at = lengths // 2
    ids[np.arange(b), mask_at] = config.mask_token_id
    mask_onehot = np.zeros((b, s), np.float32)
    mask_onehot[np.arange(b), mask_at] = 1
    return ids, mask, mask_onehot


def embed_examples(config, params, ids, mask, prompt_len: int):
    """The examples' token embeddings (B, S, H) as numpy: the frozen part, computed once in
    plaintext (jax.jit(embed_fn)), positions shifted for `prompt_len` soft-prompt tokens."""
    import jax
    import numpy as np

    from secfwt_jax.model import embed_fn, position_ids

    pos = position_ids(mask, config, prompt_len)
    return np.asarray(jax.jit(embed_fn(config, prompt_len))(params, ids, pos))


def random_prompts(rng, prompts: int, prompt_len: int, hidden: int, scale: float = 0.1):
    """(prompts, prompt_len, hidden) float32 soft prompts ~ N(0, scale^2)."""
    import numpy as np

    return (scale * rng.standard_normal((prompts, prompt_len, hidden))).astype(np.float32)


def make_certs(out_dir: str) -> dict:
    """{"cert", "key", "ca"}: one test certificate set made by experiments/make_certs.sh in
    out_dir (for the TLS and party-server benchmarks; never for a deployment)."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["bash", os.path.join(here, "make_certs.sh"), out_dir], check=True,
                   capture_output=True)
    return {"cert": f"{out_dir}/party.pem", "key": f"{out_dir}/party.key",
            "ca": f"{out_dir}/ca.pem"}


def tiny_forward(batch: int, seq_len: int):
    """(verbalizer function, params, (embeds, mask, onehot, prompt)): the link benchmarks'
    call, the tiny model's (softmax_puma, gelu_puma) 2 label-word logits for random
    embeddings (seed 0), <mask> at position 1, one 2-token prompt."""
    import numpy as np

    from secfwt_jax.model import verbalizer_fn

    cfg, params, _ = build_model("tiny", 0, attention="softmax_puma", activation="gelu_puma")
    rng = np.random.default_rng(0)
    embeds = (0.5 * rng.standard_normal((batch, seq_len, cfg.hidden_size))).astype(np.float32)
    mask = np.ones((batch, seq_len), np.int32)
    onehot = np.zeros((batch, seq_len), np.float32)
    onehot[:, 1] = 1
    prompt = random_prompts(rng, 1, 2, cfg.hidden_size)
    return verbalizer_fn(cfg, [5, 6]), params, (embeds, mask, onehot, prompt)


def interleaved_calls(backends: dict, fn, params, inputs: tuple, repeats: int,
                      row: Callable) -> dict[str, list[dict]]:
    """name -> [row(cost) per call]: `fn(params, *inputs)` compiled on every backend of
    `backends` (name -> backend), the weights put once and one warm-up call each (compile
    excluded), then `repeats` rounds calling every backend in turn (interleaved: a shared
    machine's load hits all alike). The caller closes the backends."""
    fns = {}
    for name, be in backends.items():
        fns[name] = (be.compile(fn), be.put(params))
        fns[name][0](fns[name][1], *inputs)  # compile, warm up
    runs = {name: [] for name in backends}
    for _ in range(repeats):
        for name, (f, h) in fns.items():
            _, cost = f(h, *inputs)
            runs[name].append(row(cost))
    return runs


def random_qkv(seq_len: int, heads: int = 12, head_dim: int = 64, seed: int = 0,
               init_std: float = 0.02):
    """q, k, v (1, heads, seq, head_dim) float32 of one attention layer, and mask (1, seq).

    x ~ N(0, 1) (seq, heads * head_dim); W_q, W_k, W_v ~ N(0, init_std) square, zero biases
    (Hugging Face's initialiser at 0.02); the attention benchmark and notebook 03."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hidden = heads * head_dim
    x = rng.standard_normal((seq_len, hidden))
    out = []
    for _ in range(3):
        w = init_std * rng.standard_normal((hidden, hidden))
        t = (x @ w).reshape(1, seq_len, heads, head_dim).transpose(0, 2, 1, 3)
        out.append(t.astype(np.float32))
    return (*out, np.ones((1, seq_len), np.int32))


def exact_softmax_attention(q, k, v):
    """Exact softmax attention in float64 numpy: (1, h, S, d) from q, k, v of that shape."""
    import numpy as np

    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v)


def warm_up(backend) -> None:
    """Run a small program using multiplication, comparison, exp, reciprocal and cos on
    `backend`, so that one-time setup (Cheetah's oblivious transfers) is not measured."""
    import jax.numpy as jnp
    import numpy as np

    def warm(a, b):
        return jnp.where(a < b, jnp.exp(a), 1.0 / (1.0 + b * b)), jnp.cos(a)

    x = np.linspace(-1, 1, 64, dtype=np.float32)
    backend.compile(warm)(x, x[::-1])


# ---------------------------------------------------------------------------------------------
# The attention benchmark's fixed setting (attention_cell, attention_trig, attention_grid and
# attention_report read the same one)

ATTENTION_KERNELS = ("softmax_naive", "softmax_puma", "rfa_builtin", "rfa_masked", "favor", "2quad")
ATTENTION_PROTOCOLS = ("aby3", "semi2k", "cheetah")
# one roberta-base-shaped layer: q, k, v from x ~ N(0, 1) (seq, 768) and W ~ N(0, 0.02)
ATTENTION_LAYER = dict(hidden=768, heads=12, head_dim=64, init_std=0.02, num_features=64,
                       feature_kind="orthogonal")
# |x| <= 64 rad (|x'| <= 10.2 turns): the documented input range of the masked trig bench
TRIG_RANGE_RAD = 64.0


def attention_setting(backend, extra: dict | None = None) -> dict:
    """The "setting" of an attention-benchmark record: the backend's protocol, mode, field and
    fraction bits, the layer's shape and inputs, what was measured, and `extra`."""
    a = ATTENTION_LAYER
    return {
        "protocol": backend.name, "mode": getattr(backend, "mode", None), "field": backend.field,
        "fraction_bits": backend.fraction_bits, "heads": a["heads"], "head_dim": a["head_dim"],
        "batch": 1, "hidden": a["hidden"], "init_std": a["init_std"],
        "num_features": a["num_features"], "feature_kind": a["feature_kind"],
        "inputs": "x ~ N(0,1) (seq, 768), W ~ N(0, 0.02)",
        "measured": "attention kernel alone, one warm call, compile time excluded",
        **(extra or {}),
    }
