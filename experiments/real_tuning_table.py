"""Table of experiments/real_tuning.sh: zero-shot vs tuned test accuracy on the real checkpoint.

Zero-shot: the model without any soft prompt (prompt_len 0), the similarity head, on the same
test examples and max_len as the tuning runs, computed here for each method's layer variants.
Tuned: each run's summary.json (the dev-selected prompt's test accuracy), mean and std over
the seeds found. Writes results/real_tuning/real_tuning.{json,md}; zero-shot accuracies are
kept in results/real_tuning/zero_shot.json (computed once per task, method, max_len, test_limit).

    python experiments/real_tuning_table.py --runs results/real_tuning/runs
    python experiments/real_tuning_table.py runs=results/real_tuning/runs
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import common
import jax
import numpy as np
import yaml

from secfwt_jax.loading import load_pretrained, package_checkpoint_dir
from secfwt_jax.model import position_ids
from secfwt_jax.similarity import label_embedding_fn
from secfwt_jax.tasks import load_split
from secfwt_jax.tasks.sentences import encode_descriptions, encode_sentences

VARIANT_KEYS = ("attention", "activation", "num_features", "feature_kind", "normalize_qk")


def embed(config, params, batch, chunk: int = 64):
    f = jax.jit(label_embedding_fn(config))
    out = []
    for i in range(0, len(batch.labels), chunk):
        ids, mask = batch.input_ids[i:i + chunk], batch.attention_mask[i:i + chunk]
        width = int(mask.sum(1).max())
        ids, mask = ids[:, :width], mask[:, :width]
        out.append(np.asarray(f(params, ids, position_ids(mask, config), mask)))
    return np.concatenate(out)


def zero_shot(task, method_cfg, max_len, test_limit, tokenizer, model_dir):
    """Test accuracy without a prompt for the method's layer variants."""
    model, params = load_pretrained(
        model_dir, **{k: method_cfg[k] for k in VARIANT_KEYS})
    test = load_split(task, None, "test")
    if test_limit:
        test = test[:int(test_limit)]
    batch = encode_sentences(task, test, tokenizer, max_len)
    desc = embed(model.config, params, encode_descriptions(task, tokenizer))
    pred = (embed(model.config, params, batch) @ desc.T).argmax(-1)
    return float(np.mean(pred == batch.labels)), len(test)


@dataclasses.dataclass
class Config(common.AppConfig):
    """The table's inputs (legacy form: --runs results/real_tuning/runs)."""

    runs: str = "results/real_tuning/runs"  # one run directory per (task, method, seed)
    out: str = "results/real_tuning"


@common.hydra_app(Config, "real_tuning_table")
def main(args):
    from transformers import AutoTokenizer

    model_dir = package_checkpoint_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    groups: dict = {}
    for path in sorted(glob.glob(os.path.join(args.runs, "*", "summary.json"))):
        with open(path) as f:
            s = json.load(f)
        with open(os.path.join(os.path.dirname(path), "config.yaml")) as f:
            cfg = yaml.safe_load(f)
        key = (s["task"], s["method"], s["protocol"])
        g = groups.setdefault(key, dict(runs=[], cfg=cfg))
        g["runs"].append(dict(seed=s["seed"], test=s["test_metric"], dev=s["dev_metric"],
                              initial_train=s["initial_train_acc"], train=s["train_acc"],
                              wall_s=s["wall_s"], queries=s["queries"],
                              test_examples=s["test_examples"], command=s["command"],
                              dir=os.path.dirname(path)))
    rows = []
    cache_path = os.path.join(args.out, "zero_shot.json")
    cache = common.read_json(cache_path, {})
    reference = {}  # the exact model's zero-shot accuracy without truncation (max_len 64)
    for task, limit in sorted({(k[0], g["cfg"]["test_limit"]) for k, g in groups.items()}):
        key = f"{task} fot max_len=64 test_limit={limit}"
        if key not in cache:
            exact = dict(attention="softmax", activation="gelu", num_features=64,
                         feature_kind="orthogonal", normalize_qk=False)
            cache[key] = zero_shot(task, exact, 64, limit, tokenizer, model_dir)
        reference[task] = cache[key][0]
    for (task, method, protocol), g in sorted(groups.items()):
        cfg = g["cfg"]
        key = f"{task} {method} max_len={cfg['task']['max_len']} test_limit={cfg['test_limit']}"
        if key not in cache:
            cache[key] = zero_shot(task, cfg["method"], int(cfg["task"]["max_len"]),
                                   cfg["test_limit"], tokenizer, model_dir)
            common.write_json(cache_path, cache)
        zs, n_test = cache[key]
        tests = np.array([r["test"] for r in g["runs"]])
        rows.append(dict(
            task=task, method=method, protocol=protocol,
            variants={k: cfg["method"][k] for k in VARIANT_KEYS},
            zero_shot_test=zs, exact_zero_shot_max_len_64=reference[task],
            tuned_test_mean=float(tests.mean()),
            tuned_test_std=float(tests.std(ddof=1)) if len(tests) > 1 else None,
            seeds=[r["seed"] for r in g["runs"]], n_test=n_test,
            max_len=int(cfg["task"]["max_len"]), budget=int(cfg["budget"]),
            popsize=int(cfg["optimizer"]["popsize"]), intrinsic_dim=int(cfg["intrinsic_dim"]),
            prompt_len=int(cfg["prompt_len"]), mean_wall_s=float(np.mean(
                [r["wall_s"] for r in g["runs"]])), runs=g["runs"]))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "runs"}), flush=True)
    command = common.command_line()
    lines = common.markdown_table(
        ["task", "method (layers)", "protocol", "test n", "max_len", "zero-shot (no prompt)",
         "exact zero-shot, max_len 64", "tuned, mean +- std", "seeds",
         "budget (popsize x gens)", "mean wall s / run"],
        [[r["task"], f"{r['method']} ({r['variants']['attention']}, "
          f"{r['variants']['activation']})", r["protocol"], r["n_test"], r["max_len"],
          f"{r['zero_shot_test']:.4f}", f"{r['exact_zero_shot_max_len_64']:.4f}",
          f"{r['tuned_test_mean']:.4f}"
          + ("" if r["tuned_test_std"] is None else f" +- {r['tuned_test_std']:.4f}"),
          len(r["seeds"]), f"{r['budget']} ({r['popsize']} x {r['budget'] // r['popsize']})",
          f"{r['mean_wall_s']:.0f}"] for r in rows])
    lines += ["", f"Aggregated by `{command}`; each run's command is in its summary.json."]
    common.write_outputs(args.out, "real_tuning", dict(command=command, rows=rows),
                         "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
