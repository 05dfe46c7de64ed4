"""Forward-only prompt tuning, end to end: `python experiments/run.py task=mrpc`.

Hydra groups: task, model, method, protocol, optimizer, network (see experiments/conf). Each run
directory holds config.yaml (resolved), metrics.jsonl (one line per generation) and
summary.json. `-m protocol=aby3,cheetah` runs both and prints one comparison table.

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

import json
import logging
import os
import shlex
import sys

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from secfwt_jax import ModelConfig, init_params, load_pretrained  # noqa: E402
from secfwt_jax.backend import estimate_time, make_backend, sum_costs  # noqa: E402
from secfwt_jax.tasks import planted as planted_task  # noqa: E402
from secfwt_jax.tuning.loop import Tuner, TuningConfig, tuning_projection  # noqa: E402


def model_from_config(cfg: DictConfig, tokenizer=None):
    """(ModelConfig, params) for the model group, the method's layer variants and, with a
    real tokenizer, its vocabulary size, special-token ids and (for presets) its maximum
    length."""
    overrides = {k: cfg.method[k] for k in (
        "attention", "activation", "num_features", "feature_kind", "normalize_qk", "rfa_trig")}
    if tokenizer is not None:
        overrides.update(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            # <s> / </s> (RoBERTa) or [CLS] / [SEP] (BERT, which has no bos/eos tokens)
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
            mask_token_id=tokenizer.mask_token_id,
        )
        if not cfg.model.path and not cfg.model.max_position_embeddings:
            overrides["max_position_embeddings"] = tokenizer_positions(tokenizer)
    if cfg.model.path:
        if cfg.model.layers:
            raise ValueError("model.layers applies to presets only, not to a checkpoint")
        model, params = load_pretrained(cfg.model.path, **overrides)
        return model.config, params
    if cfg.model.layers:
        overrides["num_hidden_layers"] = int(cfg.model.layers)
    if cfg.model.max_position_embeddings:
        overrides["max_position_embeddings"] = int(cfg.model.max_position_embeddings)
    overrides["initializer_range"] = float(cfg.model.initializer_range)
    config = ModelConfig.from_name(cfg.model.name, **overrides)
    return config, init_params(config, seed=int(cfg.model.init_seed))


def tokenizer_positions(tokenizer) -> int:
    """Position-table size for a tokenizer: the max_position_embeddings of the config.json
    beside its files, else its model_max_length plus RoBERTa's offset (pad id + 1)."""
    path = os.path.join(str(getattr(tokenizer, "name_or_path", "")), "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            n = json.load(f).get("max_position_embeddings")
        if n:
            return int(n)
    limit = int(tokenizer.model_max_length)
    if limit < 100_000:  # transformers' "no limit" sentinel is huge
        return limit + tokenizer.pad_token_id + 1
    raise ValueError(
        "the tokenizer states no maximum length: set model.max_position_embeddings (RoBERTa: 514)"
    )


def tuning_config(cfg: DictConfig) -> TuningConfig:
    return TuningConfig(
        optimizer=cfg.optimizer.name, popsize=int(cfg.optimizer.popsize),
        sigma0=float(cfg.optimizer.sigma0), intrinsic_dim=int(cfg.intrinsic_dim),
        prompt_len=int(cfg.prompt_len), prompt_mode=cfg.prompt_mode, projection=cfg.projection,
        budget=int(cfg.budget), loss=cfg.loss, reveal=cfg.reveal, eval_every=int(cfg.eval_every),
        patience=int(cfg.patience), checkpoint_every=int(cfg.checkpoint_every), seed=int(cfg.seed),
        vocab_bucket=int(cfg.vocab_bucket), head=cfg.head, temperature=float(cfg.temperature),
    )


def load_task_data(cfg: DictConfig, tcfg: TuningConfig):
    """(model config, params, label word ids, train, dev, test batches, metric_fn, main,
    label descriptions or None)."""
    if cfg.task.name == planted_task.NAME:
        config, params = model_from_config(cfg)
        A = np.asarray(tuning_projection(tcfg, config, params))
        t = cfg.task
        p = planted_task.make_planted(
            config, params, A, prompt_len=tcfg.prompt_len, num_labels=t.num_labels,
            n_train=t.n_train, n_dev=t.n_dev, n_test=t.n_test, seq_len=t.seq_len,
            teacher_scale=t.teacher_scale, prompt_mode=tcfg.prompt_mode, seed=cfg.seed,
        )
        return config, params, p.label_word_ids, p.train, p.dev, p.test, None, "accuracy", None

    from secfwt_jax.tasks import encode, get_task, label_word_ids, load_split, load_tokenizer
    from secfwt_jax.tasks.metrics import compute_metrics
    from secfwt_jax.tasks.sentences import encode_descriptions, encode_sentences

    task = get_task(cfg.task.name)
    tokenizer = load_tokenizer(checkpoint_tokenizer(cfg))
    config, params = model_from_config(cfg, tokenizer)
    similarity = cfg.head == "similarity"
    splits = {}
    for split in ("train", "dev", "test"):
        examples = load_split(task, cfg.data_dir, split, k=cfg.task.k, seed=cfg.task.data_seed)
        if split == "test" and cfg.test_limit:
            examples = examples[: int(cfg.test_limit)]
        splits[split] = (encode_sentences if similarity else encode)(
            task, examples, tokenizer, int(cfg.task.max_len), tcfg.prompt_len,
            max_positions=config.max_seq_len,
        )
    words = None if similarity else label_word_ids(task, tokenizer)
    descriptions = encode_descriptions(task, tokenizer) if similarity else None
    metric_fn = lambda preds, labels: compute_metrics(task, preds, labels)  # noqa: E731
    return (config, params, words, splits["train"], splits["dev"], splits["test"], metric_fn,
            task.main_metric, descriptions)


def checkpoint_tokenizer(cfg: DictConfig):
    """cfg.tokenizer; when it is null and model.path holds tokenizer files, the checkpoint's
    own tokenizer (a BERT checkpoint needs its WordPiece vocabulary, not $SECFWT_TOKENIZER)."""
    if cfg.tokenizer is None and cfg.model.path and any(
        os.path.isfile(os.path.join(cfg.model.path, f)) for f in ("tokenizer.json", "vocab.json")
    ):
        return cfg.model.path
    return cfg.tokenizer


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def run(cfg: DictConfig, run_dir: str) -> dict:
    tcfg = tuning_config(cfg)
    p = cfg.protocol
    backend = make_backend(  # first: bad protocol settings fail before any work
        p.name, mode=p.mode, field=p.field, fraction_bits=p.fraction_bits, timeout_s=p.timeout_s
    )
    with backend:
        config, params, words, train, dev, test, metric_fn, main, descriptions = load_task_data(
            cfg, tcfg)
        tuner = Tuner(
            tcfg, backend, config, params, words, metric_fn=metric_fn, main_metric=main,
            run_dir=run_dir, progress=bool(cfg.progress), descriptions=descriptions,
        )
        result = tuner.run(train, dev, test, resume=bool(cfg.resume))
        costs = tuner.evaluator.costs
    total = sum_costs(costs)
    networks = {name: estimate_time(total, name).to_dict() for name in ("lan", "wan100", "wan200")}
    summary = dict(
        task=cfg.task.name, protocol=p.name, field=p.field, mode=p.mode, model=cfg.model.name,
        method=cfg.method.name, head=tcfg.head, attention=config.attention,
        activation=config.activation,
        rfa_trig=config.rfa_trig, normalize_qk=config.normalize_qk,
        embedding_lookups=tuner.evaluator.lookups, optimizer=tcfg.optimizer,
        popsize=tcfg.popsize, intrinsic_dim=tcfg.intrinsic_dim, prompt_len=tcfg.prompt_len,
        seed=tcfg.seed,
        model_shape=dict(layers=config.num_hidden_layers, hidden=config.hidden_size,
                         heads=config.num_attention_heads, vocab=config.vocab_size),
        train_examples=len(train.labels), dev_examples=len(dev.labels),
        test_examples=len(test.labels), seq_len=int(train.input_ids.shape[1]),
        weights="checkpoint " + cfg.model.path if cfg.model.path else "random (init_params)",
        **{k: v for k, v in result.items() if k != "best_z"},
        network=cfg.network.name, network_estimate_s=networks[cfg.network.name],
        network_estimates=networks, command=command_line(),
    )
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(run_dir, "best_prompt_z.json"), "w") as f:
        json.dump(result["best_z"], f)
    return summary


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    run_dir = HydraConfig.get().runtime.output_dir
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    s = run(cfg, run_dir)
    keys = ("task", "protocol", "model", "generations", "queries", "final_loss",
            "initial_train_acc", "train_acc", "dev_metric", "test_metric", "bytes_total", "wall_s")
    print(json.dumps({k: s[k] for k in keys}))
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()
