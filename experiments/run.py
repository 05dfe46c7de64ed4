"""Forward-only prompt tuning, end to end: `python experiments/run.py task=mrpc`.

Hydra groups: task, model, method, protocol, optimizer, network (see experiments/conf). Each run
directory holds config.yaml (resolved), fingerprint.json (what determines the trajectory, see
secfwt_jax/tuning/records.py), metrics.jsonl (one line per generation) and summary.json.
Every setting is checked before the first secure call; a rerun in the same directory resumes
only the same run. `-m protocol=aby3,cheetah` runs both and prints one comparison table (and
the failed jobs with their errors).

Examples:
    python experiments/run.py                   # planted task, tiny model, plaintext
    python experiments/run.py protocol=aby3 budget=200
    python experiments/run.py task=mrpc data_dir=../shared/data \
        tokenizer=../shared/tokenizer/roberta-base protocol=aby3 budget=40
    python experiments/run.py -m protocol=aby3,cheetah budget=100
    python experiments/run.py task=sst2 model=local model.path=<all-MiniLM-L6-v2 dir> \
        head=similarity method=fot      # a sentence encoder: its own tokenizer, cosine head
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import traceback
import types
import warnings

import common
import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from secfwt_jax.backend import estimate_time, make_backend, protocol_capabilities, sum_costs
from secfwt_jax.principals import (
    DataOwner,
    ModelOwner,
    load_config,
    load_model,
    owner_params,
    publish_for_run,
)
from secfwt_jax.similarity import SIMILARITY_PROMPT_MODES
from secfwt_jax.tasks import planted as planted_task
from secfwt_jax.tuning.loop import INT_MINIMA, TuningConfig, tuning_projection
from secfwt_jax.tuning.records import (
    dir_sha256,
    file_sha256,
    prepare_run_dir,
    write_fingerprint,
)

CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf")
GROUPS = ("task", "model", "method", "protocol", "optimizer", "network")
# Keys of the config that do not change the tuning trajectory (left out of the fingerprint).
NOT_IN_FINGERPRINT = ("data_dir", "tokenizer", "checkpoint_every", "resume", "progress",
                      "network")


def model_from_config(cfg: DictConfig, tokenizer=None, backend=None):
    """(ModelConfig, params) for the model group, the method's layer variants and, with a
    real tokenizer, its vocabulary size, special-token ids and (for presets) its maximum
    length. With `backend` (mode=mp) the model owner is its own process: (ModelConfig,
    (Handle, ModelDisclosure)), and this process never holds the weights."""
    spec = model_spec(cfg, tokenizer)
    if backend is None:
        return load_model(spec)
    return owner_model(spec, backend)


def owner_model(spec: dict, backend, planted: dict | None = None):
    """mode=mp: the model owner's process loads spec's weights, shares them into the
    parties and publishes its ModelDisclosure (principals.publish_for_run); returns
    (ModelConfig, (Handle, ModelDisclosure))."""
    handle, disclosure = backend.put_from_owner_process(
        owner_params, (spec,), disclose=functools.partial(publish_for_run, spec, planted))
    return disclosure.config or load_config(spec), (handle, disclosure)


def model_spec(cfg: DictConfig, tokenizer=None) -> dict:
    """What the model owner loads (principals.load_model): checkpoint path or preset name,
    the ModelConfig overrides and the init seed."""
    overrides = {k: cfg.method[k] for k in common.METHOD_LAYER_KEYS}
    if tokenizer is not None:
        overrides.update(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            # <s> / </s> (RoBERTa) or [CLS] / [SEP] (BERT, which has no bos/eos tokens)
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
            mask_token_id=tokenizer.mask_token_id,
        )
        if not cfg.model.path and not cfg.model.max_position_embeddings:
            overrides["max_position_embeddings"] = tokenizer_positions(tokenizer)
    spec = dict(path=cfg.model.path or None, name=cfg.model.name, overrides=overrides,
                init_seed=int(cfg.model.init_seed))
    if cfg.model.path:
        if cfg.model.layers:
            raise ValueError("model.layers applies to presets only, not to a checkpoint")
        return spec
    if cfg.model.layers:
        overrides["num_hidden_layers"] = int(cfg.model.layers)
    if cfg.model.max_position_embeddings:
        overrides["max_position_embeddings"] = int(cfg.model.max_position_embeddings)
    overrides["initializer_range"] = float(cfg.model.initializer_range)
    return spec


def tokenizer_positions(tokenizer) -> int:
    """Position-table size for a tokenizer: the max_position_embeddings of the config.json
    beside its files, else its model_max_length plus RoBERTa's offset (pad id + 1)."""
    path = os.path.join(str(getattr(tokenizer, "name_or_path", "")), "config.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                n = json.load(f).get("max_position_embeddings")
        except (ValueError, AttributeError) as e:
            raise ValueError(f"{path}: not a valid config.json ({type(e).__name__}: {e})") from e
        if n:
            return int(n)
    limit = int(tokenizer.model_max_length)
    if limit < 100_000:  # transformers' "no limit" sentinel is huge
        return limit + tokenizer.pad_token_id + 1
    raise ValueError(
        "the tokenizer states no maximum length: set model.max_position_embeddings (RoBERTa: 514)"
    )


def check_int(key: str, value, low: int, *, allow_none: bool = False):
    """`value` of config key `key` as an int >= low (None passes when allow_none), else a
    ValueError naming the key, the value and what is accepted."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        accepted = f"an integer >= {low}" + (" or null" if allow_none else "")
        raise ValueError(f"{key} must be {accepted}, got {value!r}")
    return value


def check_number(key: str, value) -> float:
    """`value` of config key `key` as a finite float > 0, else a ValueError naming both."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            np.isfinite(value) and value > 0):
        raise ValueError(f"{key} must be a finite number > 0, got {value!r}")
    return float(value)


# TuningConfig fields that the optimizer group sets (config key optimizer.<key>); every other
# field is read from the top-level key of its own name.
OPTIMIZER_FIELDS = {"optimizer": "name", "popsize": "popsize", "sigma0": "sigma0"}


def tuning_config(cfg: DictConfig) -> TuningConfig:
    """The TuningConfig of `cfg`, one config key per dataclass field (OPTIMIZER_FIELDS, else
    the top-level key of the field's name); integers (INT_MINIMA) and numbers are checked
    first, so an error names the config key. A field without a config key is an error."""
    minima = dict(INT_MINIMA)
    values = {}
    for field in dataclasses.fields(TuningConfig):
        name = field.name
        sub = OPTIMIZER_FIELDS.get(name)
        key, value = (f"optimizer.{sub}", cfg.optimizer[sub]) if sub else (name, cfg[name])
        if name in minima:
            value = check_int(key, value, minima[name])
        elif field.type in ("float", float):
            value = check_number(key, value)
        values[name] = value
    return TuningConfig(**values)


def declared_keys(choices: dict) -> dict[str, set]:
    """{"": top-level keys of config.yaml, group: keys of the chosen option's file}."""
    top = OmegaConf.load(os.path.join(CONF_DIR, "config.yaml"))
    out = {"": set(top) - {"defaults", "hydra"}}
    for group in GROUPS:
        out[group] = option_keys(group, choices[group])
    return out


def option_keys(group: str, option: str) -> set:
    """Keys of conf/<group>/<option>.yaml with those of the options it extends through its
    defaults list (every protocol extends conf/protocol/base.yaml)."""
    conf = OmegaConf.load(os.path.join(CONF_DIR, group, f"{option}.yaml"))
    keys = set(conf) - {"defaults"}
    for parent in conf.get("defaults", []):
        if parent != "_self_":
            keys |= option_keys(group, parent)
    return keys


def check_known_keys(cfg: DictConfig, choices: dict) -> None:
    """Refuse any key that no config file declares (e.g. `+task.label_words=[..]`, which
    nothing reads): an accepted key the run does not use would make config.yaml lie."""
    known = declared_keys(choices)
    unknown = [k for k in cfg if k not in known[""] and k not in GROUPS]
    for group in GROUPS:
        unknown += [f"{group}.{k}" for k in cfg[group] if k not in known[group]]
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(unknown)}: no part of the run reads them. Keys of "
            "this configuration: " + "; ".join(
                f"{g or 'top level'}: {', '.join(sorted(known[g]))}" for g in ("", *GROUPS))
        )


def validate(cfg: DictConfig, choices: dict | None = None) -> TuningConfig:
    """Check every setting before any work: unknown keys, integers and their ranges, names
    (protocol, field, mode, network, optimizer, loss, ...) and combinations that cannot run.
    Returns the TuningConfig."""
    from secfwt_jax.backend import FIELDS, MODES, NETWORKS, PROTOCOLS, check_dealer
    from secfwt_jax.config import check_choice

    choices = choices or {g: cfg[g].name for g in GROUPS}
    check_known_keys(cfg, choices)
    tcfg = tuning_config(cfg)
    p = cfg.protocol
    check_choice("protocol", p.name, PROTOCOLS)
    check_choice("field", p.field, FIELDS)
    check_choice("protocol.mode", p.mode, MODES)
    check_dealer(p.name, p.get("dealer"))
    if cfg.head == "similarity" and cfg.prompt_mode not in SIMILARITY_PROMPT_MODES:
        raise ValueError(
            f"head=similarity takes prompt_mode {', '.join(SIMILARITY_PROMPT_MODES)} (the prompt "
            f"rows are left out of the pooling), got {cfg.prompt_mode!r}; the add modes need "
            "placeholder tokens in the sentences, which the similarity head does not insert yet"
        )
    check_choice("network", cfg.network.name, tuple(NETWORKS))
    check_int("protocol.fraction_bits", p.fraction_bits, 1, allow_none=True)
    check_number("protocol.timeout_s", p.timeout_s)
    check_int("test_limit", cfg.test_limit, 1, allow_none=True)
    check_int("model.init_seed", cfg.model.init_seed, 0)
    check_int("model.layers", cfg.model.layers, 1, allow_none=True)
    check_int("model.max_position_embeddings", cfg.model.max_position_embeddings, 1,
              allow_none=True)
    check_number("model.initializer_range", cfg.model.initializer_range)
    if cfg.task.name == planted_task.NAME:
        t = cfg.task
        for key, low in (("num_labels", 2), ("n_train", 1), ("n_dev", 1), ("n_test", 1),
                         ("seq_len", planted_task.MIN_SEQ_LEN)):
            check_int(f"task.{key}", t[key], low)
        check_number("task.teacher_scale", t.teacher_scale)
    else:
        for key, low in (("k", 1), ("data_seed", 0)):
            check_int(f"task.{key}", cfg.task[key], low)
        check_int("task.max_len", cfg.task.max_len, 1, allow_none=True)
        from secfwt_jax.tasks.encode import LABEL_STYLES, OVERLONG

        check_choice("data", cfg.data, DATA_SOURCES)
        check_choice("label_tokens", cfg.label_tokens, LABEL_STYLES)
        check_choice("overlong", cfg.overlong, OVERLONG)
    caps = protocol_capabilities(p.name, p.field, p.fraction_bits)
    if cfg.method.rfa_trig == "masked" and caps.fixed_point and not caps.opens_to_servers:
        # the masked cos/sin opens masked values to the parties inside the program, which a
        # fixed-point backend without an opening (the emulation) cannot do
        raise ValueError(
            f"method {cfg.method.name!r} (rfa_trig=masked) cannot run on protocol={p.name}, "
            "which computes in fixed point but cannot open the masked cos/sin to the servers; "
            "use protocol=plaintext (float) or an SPU protocol (aby3, semi2k, cheetah, ref2k)"
        )
    return tcfg


def data_files(cfg: DictConfig) -> dict[str, str]:
    """{split: sha256} of a real task's train/dev/test files ("missing" for an absent one; the
    loader then names it)."""
    from secfwt_jax.tasks.data import LOCAL_LAYOUTS, resolve_data_dir

    layout = LOCAL_LAYOUTS.get(cfg.task.name)
    if layout is None:
        return {}
    task_dir = resolve_data_dir(cfg.data_dir) / layout.dirname
    if cfg.data == "bbt":  # BBT's split is drawn from the full training set (load_examples)
        out = {"full_train": file_sha256(task_dir / layout.full_train[0])
               if layout.full_train else "missing"}
        test = layout.bbt_test or layout.test
    else:
        kshot = task_dir / "k-shot" / f"{cfg.task.k}-{cfg.task.data_seed}"
        out = {s: file_sha256(kshot / f"{s}.tsv") for s in ("train", "dev")}
        test = layout.test
    if test is not None:
        out["test"] = file_sha256(task_dir / test[0])
    return out


def fingerprint(cfg: DictConfig) -> dict:
    """Everything that determines the run's trajectory and results: the resolved config less
    NOT_IN_FINGERPRINT and the protocol's mode/timeout, with the sha256 of the data files, the
    tokenizer files and a checkpoint's files in place of their paths."""
    c = OmegaConf.to_container(cfg, resolve=True)
    fp = {k: v for k, v in c.items() if k not in NOT_IN_FINGERPRINT}
    fp["protocol"] = {k: c["protocol"][k] for k in ("name", "field", "fraction_bits")}
    if cfg.task.name != planted_task.NAME:
        fp["data_files"] = data_files(cfg)
        fp["tokenizer_files"] = dir_sha256(cfg.tokenizer or os.environ.get("SECFWT_TOKENIZER", ""))
    if cfg.model.path:
        fp["model_files"] = dir_sha256(cfg.model.path)
    return fp


DATA_SOURCES = ("lmbff", "bbt")


def load_examples(cfg: DictConfig, task, tokenizer, placeholders: int, limit: int) -> dict:
    """{"train", "dev", "test"}: example lists. data "lmbff": the LM-BFF k-shot files
    (k, data_seed); "bbt": BBT's own split (bbt.py, construct_true_few_shot_data) of the full
    training set, k per class for train and for dev, shuffled with data_seed (BBT: 42), after
    leaving out the rows longer than `limit` tokens (BBT drops them when loading), and BBT's
    test split."""
    from secfwt_jax.tasks import (
        load_bbt_test,
        load_full_train,
        load_split,
        row_lengths,
        true_few_shot,
    )

    if cfg.data not in DATA_SOURCES:
        raise ValueError(f"unknown data {cfg.data!r}; accepted: {', '.join(DATA_SOURCES)}")
    k, seed = int(cfg.task.k), int(cfg.task.data_seed)
    if cfg.data == "lmbff":
        return {split: load_split(task, cfg.data_dir, split, k=k, seed=seed)
                for split in ("train", "dev", "test")}
    full = load_full_train(task, cfg.data_dir)
    if cfg.overlong == "drop":
        lengths = row_lengths(task, full, tokenizer, placeholders)
        full = [ex for ex, n in zip(full, lengths) if n <= limit]
    train, dev = true_few_shot(full, k, seed)
    return {"train": train, "dev": dev, "test": load_bbt_test(task, cfg.data_dir)}


def load_task_data(cfg: DictConfig, tcfg: TuningConfig, backend=None):
    """(model config, params, label word ids, train, dev, test batches, metric_fn, main,
    data_info) with data_info the data source, the rows left out as too long and, for
    head=similarity, the label descriptions' Batch under "descriptions" (else None).
    backend (mode=mp): the model owner runs as its own process and `params` is
    (Handle, ModelDisclosure) (model_from_config); the planted task, made with the weights,
    is then the model owner's disclosure."""
    if cfg.task.name == planted_task.NAME:
        t = cfg.task
        kwargs = dict(prompt_len=tcfg.prompt_len, num_labels=t.num_labels, n_train=t.n_train,
                      n_dev=t.n_dev, n_test=t.n_test, seq_len=t.seq_len,
                      teacher_scale=t.teacher_scale, prompt_mode=tcfg.prompt_mode, seed=cfg.seed)
        if backend is not None:
            config, params = owner_model(model_spec(cfg), backend,
                                         dict(tcfg=tcfg, kwargs=kwargs))
            p = types.SimpleNamespace(**params[1].planted)
            return (config, params, p.label_word_ids, p.train, p.dev, p.test, None, "accuracy",
                    dict(data="planted", descriptions=None))
        config, params = model_from_config(cfg)
        A = np.asarray(tuning_projection(tcfg, config, params))
        try:
            p = planted_task.make_planted(config, params, A, **kwargs)
        except ValueError as e:
            if config.attention != "rfa" or not config.normalize_qk:
                raise
            # normalised q/k make a random model's attention near uniform: no teacher separates
            raise ValueError(
                f"{e}. With normalize_qk (method {cfg.method.name!r}) a random model's attention "
                "is near uniform; on the planted task use method.normalize_qk=false "
                "model.initializer_range=0.15 (weights small enough for RFA's fixed-point "
                "range), or a real task"
            ) from e
        return (config, params, p.label_word_ids, p.train, p.dev, p.test, None, "accuracy",
                dict(data="planted", descriptions=None))

    from secfwt_jax.model import prompt_extends_sequence
    from secfwt_jax.tasks import encode, get_task, label_word_ids, load_tokenizer
    from secfwt_jax.tasks.metrics import compute_metrics
    from secfwt_jax.tasks.sentences import encode_descriptions, encode_sentences

    task = get_task(cfg.task.name)
    tokenizer = load_tokenizer(checkpoint_tokenizer(cfg))
    config, params = model_from_config(cfg, tokenizer, backend)
    # "add" modes: BBT's placeholder tokens in the row; "cat_pre_ln": the prompt takes positions
    similarity = cfg.head == "similarity"
    placeholders = 0 if prompt_extends_sequence(tcfg.prompt_mode) else tcfg.prompt_len
    positioned = tcfg.prompt_len if tcfg.prompt_mode == "cat_pre_ln" else 0
    max_len = None if cfg.task.max_len is None else int(cfg.task.max_len)
    examples = load_examples(cfg, task, tokenizer, placeholders, config.max_seq_len - positioned)
    if cfg.test_limit:
        examples["test"] = examples["test"][: int(cfg.test_limit)]
    if similarity:  # plain sentences (no template, no <mask>), cut by the tokenizer to fit
        width = max_len or config.max_seq_len - positioned
        splits = {split: encode_sentences(task, exs, tokenizer, width, positioned,
                                          max_positions=config.max_seq_len)
                  for split, exs in examples.items()}
    else:
        splits = {
            split: encode(task, exs, tokenizer, max_len, positioned,
                          max_positions=config.max_seq_len, placeholders=placeholders,
                          overlong=cfg.overlong)
            for split, exs in examples.items()
        }
    info = dict(data=cfg.data, label_tokens=None if similarity else cfg.label_tokens,
                overlong="truncate" if similarity else cfg.overlong,
                left_out_too_long={s: len(examples[s]) - len(splits[s]) for s in splits},
                descriptions=encode_descriptions(task, tokenizer) if similarity else None)
    warn_truncated(splits, info["left_out_too_long"], max_len)
    words = None if similarity else label_word_ids(task, tokenizer, cfg.label_tokens)
    metric_fn = lambda preds, labels: compute_metrics(task, preds, labels)  # noqa: E731
    return (config, params, words, splits["train"], splits["dev"], splits["test"], metric_fn,
            task.main_metric, info)


def truncated_counts(*batches) -> dict[str, int]:
    """{split: examples cut to fit} of train, dev, test Batches."""
    return {s: int(np.sum(b.truncated)) for s, b in zip(("train", "dev", "test"), batches)}


def warn_truncated(splits: dict, left_out: dict, max_len: int | None) -> None:
    """Warn when examples were cut to fit (overlong=truncate) or left out (overlong=drop);
    summary.json records both counts (truncated, left_out_too_long)."""
    counts = {s: int(np.sum(b.truncated)) for s, b in splits.items()}
    for what, n_by_split, key in (("truncated", counts, "truncated"),
                                  ("left out", left_out, "left_out_too_long")):
        if any(n_by_split.values()):
            # a dropped row is no longer in its split's Batch
            total = {s: len(splits[s].labels) + (0 if key == "truncated" else n)
                     for s, n in n_by_split.items()}
            msg = (f"task.max_len={max_len} (or the model's positions) {what} examples: "
                   + ", ".join(f"{s} {n} of {total[s]}" for s, n in n_by_split.items())
                   + f"; summary.json records the counts ({key})")
            warnings.warn(msg, stacklevel=2)
            print(f"WARNING: {msg}", file=sys.stderr, flush=True)


def range_warning(cfg: DictConfig) -> str | None:
    """The warning for a secure RFA run whose exp(|k|^2/2) has no bound (normalize_qk=false):
    its fixed-point values can wrap around silently (docs/masked_trig.md), so the summary
    records it. None when the range is bounded or the run is in floating point."""
    if cfg.method.attention != "rfa" or cfg.method.normalize_qk or cfg.protocol.name == "plaintext":
        return None
    return (f"attention=rfa with normalize_qk=false on protocol={cfg.protocol.name}: "
            "exp(|k|^2/2) is bounded only by the model's keys and may leave the fixed-point range "
            "(outputs then wrap around silently; docs/masked_trig.md gives the safe range). "
            "method.normalize_qk=true bounds it for any input")


def checkpoint_tokenizer(cfg: DictConfig):
    """cfg.tokenizer; when it is null and model.path holds tokenizer files, the checkpoint's
    own tokenizer (a BERT checkpoint needs its WordPiece vocabulary, not $SECFWT_TOKENIZER)."""
    if cfg.tokenizer is None and cfg.model.path and any(
        os.path.isfile(os.path.join(cfg.model.path, f)) for f in ("tokenizer.json", "vocab.json")
    ):
        return cfg.model.path
    return cfg.tokenizer


def run(cfg: DictConfig, run_dir: str, record: dict | None = None,
        choices: dict | None = None) -> dict:
    """One run into run_dir. `record`: the fingerprint record of prepare_run_dir (its budgets
    go into the summary); `choices`: Hydra's group choices (default: each group's name)."""
    tcfg = validate(cfg, choices)
    p = cfg.protocol
    if range_warning(cfg):
        print(f"WARNING: {range_warning(cfg)}", file=sys.stderr, flush=True)
    cluster = p.get("cluster")  # party servers on other hosts: mode mp (README)
    backend = make_backend(  # first: bad protocol settings fail before any work
        p.name, mode="mp" if cluster else p.mode, field=p.field, fraction_bits=p.fraction_bits,
        timeout_s=p.timeout_s, dealer=p.get("dealer"),
        tls=OmegaConf.to_container(p.tls) if p.get("tls") else None, cluster=cluster,
    )
    separate_owner = getattr(backend, "mode", None) == "mp"
    with backend:
        config, params, words, train, dev, test, metric_fn, main, data_info = load_task_data(
            cfg, tcfg, backend if separate_owner else None)
        # the principals (README "Threat model"): the data owner gets a Handle and the
        # declared disclosure, never the weight arrays; in mode=mp the model owner is its own
        # process and this one never holds them (owner_model)
        if separate_owner:
            weights, disclosure = params
        else:
            model_owner = ModelOwner(config, params)
            weights, disclosure = model_owner.share_into(backend), model_owner.disclosure()
        del params
        tuner = DataOwner(
            tcfg, backend, config, weights, disclosure,
            words, metric_fn=metric_fn, main_metric=main, run_dir=run_dir,
            progress=bool(cfg.progress), descriptions=data_info.pop("descriptions"),
        ).tuner
        result = tuner.run(train, dev, test, resume=bool(cfg.resume))
        costs = tuner.evaluator.costs
    summary = dict(command=common.command_line(), range_warning=range_warning(cfg),
                   budgets=(record or {}).get("budgets", [tcfg.budget]),
                   truncated=truncated_counts(train, dev, test),
                   **{k: v for k, v in result.items() if k != "best_z"})
    with open(os.path.join(run_dir, "best_prompt_z.json"), "w") as f:
        json.dump(result["best_z"], f)
    try:  # a failure from here on must not lose the tuning's results: they are written first
        summary = summarise(cfg, tcfg, config, tuner, train, dev, test, costs,
                            summary, data_info)
    except Exception as e:
        summary["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def summarise(cfg, tcfg, config, tuner, train, dev, test, costs, partial: dict,
              data_info: dict) -> dict:
    """The full summary: settings, shapes, the tuning's results (`partial`) and network
    estimates."""
    p = cfg.protocol
    total = sum_costs(costs)
    networks = {name: estimate_time(total, name).to_dict() for name in ("lan", "wan100", "wan200")}
    summary = dict(
        task=cfg.task.name, protocol=p.name, field=p.field,
        mode="mp" if p.get("cluster") else p.mode, model=cfg.model.name,
        **({"dealer": p.dealer} if p.get("dealer") else {}),
        tls_links=bool(p.get("tls")) or cluster_tls(p),
        **({"cluster": p.cluster, "model_owner": "own process"} if p.get("cluster") else {}),
        method=cfg.method.name, head=tcfg.head, attention=config.attention,
        activation=config.activation,
        rfa_trig=config.rfa_trig, normalize_qk=config.normalize_qk, rfa_lean=config.rfa_lean,
        embedding_lookups=tuner.evaluator.lookups, optimizer=tcfg.optimizer,
        prompt_mode=tcfg.prompt_mode, selection=tcfg.selection, loss=tcfg.loss,
        projection=tcfg.projection, **data_info,
        popsize=tcfg.popsize, intrinsic_dim=tcfg.intrinsic_dim, prompt_len=tcfg.prompt_len,
        seed=tcfg.seed,
        model_shape=dict(layers=config.num_hidden_layers, hidden=config.hidden_size,
                         heads=config.num_attention_heads, vocab=config.vocab_size),
        train_examples=len(train.labels), dev_examples=len(dev.labels),
        test_examples=len(test.labels), seq_len=int(train.input_ids.shape[1]),
        weights="checkpoint " + cfg.model.path if cfg.model.path else "random (init_params)",
        **partial,
        network=cfg.network.name, network_estimate_s=networks[cfg.network.name],
        network_estimates=networks,
    )
    return summary


def cluster_tls(p: DictConfig) -> bool:
    """Whether protocol.cluster's file secures the links with TLS."""
    from secfwt_jax.party_cluster import load_cluster

    return bool(p.get("cluster")) and load_cluster(p.cluster).tls


def launch(cfg: DictConfig, run_dir: str, choices: dict | None = None) -> dict:
    """Check every setting and the run directory, then write config.yaml and
    fingerprint.json and run. Nothing in run_dir is written before the checks pass."""
    validate(cfg, choices)
    record = prepare_run_dir(run_dir, fingerprint(cfg), resume=bool(cfg.resume))
    os.makedirs(run_dir, exist_ok=True)
    write_fingerprint(run_dir, record)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    return run(cfg, run_dir, record, choices)


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    hc = HydraConfig.get()
    run_dir = hc.runtime.output_dir
    try:
        s = launch(cfg, run_dir, {g: hc.runtime.choices[g] for g in GROUPS})
    except Exception as e:
        if hc.mode != RunMode.MULTIRUN:
            raise
        # a multirun goes on with the other jobs; callbacks.SummaryTable lists this one as
        # failed (from error.json) and makes the sweep exit non-zero
        traceback.print_exc()
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "error.json"), "w") as f:
            json.dump(dict(error=f"{type(e).__name__}: {e}", overrides=list(hc.overrides.task),
                           command=common.command_line()), f, indent=1)
        return
    keys = ("task", "protocol", "model", "generations", "queries", "final_loss",
            "initial_train_acc", "train_acc", "dev_metric", "test_metric", "bytes_total", "wall_s")
    print(json.dumps({k: s[k] for k in keys}))
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()
