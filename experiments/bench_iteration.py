"""Cost of one iteration of each tuning method under SPU protocols.

Methods and what "one iteration" is (every record states it in `unit` and `definition`):
- sft: one optimizer step on one batch: forward, backward (jax.grad) and Adam on every
  parameter but the embedding tables, as ONE secure program (secfwt_jax.baselines).
- prompt_tuning: one optimizer step on one batch, gradients and Adam on the soft prompt only.
- fot_softmax / fot_rfa: forward-only tuning with softmax / random-feature attention (SPU's
  built-in exp, reciprocal, cos and sin; erf GeLU), in two units: "query" = the verbalizer
  logits of one candidate prompt on one batch; "generation" = one call for all `population`
  candidates on the batch (the unit of one CMA-ES step).
- fot_puma: the same with PUMA's softmax and GeLU (method=fot_puma, the fair softmax baseline).
- fot_secfwt: the same as method=secfwt: RFA with l2-normalised q/k, the one-round masked
  cos/sin (fresh masks from the data owner each call, shared as inputs and counted) and PUMA's
  GeLU.
Weights, optimizer state and examples are secret inputs; SFT / prompt-tuning outputs stay
secret shares (reveal=False); FoT reveals the (P, B, C) logits to the data owner.

Composition (`compose_from=[1, 2]`): a full RoBERTa-large secure step does not fit this
machine's time, so the N-layer figure is composed from measured programs with 1 and 2 encoder
layers: cost(N) = cost(1) + (N - 1) * (cost(2) - cost(1)), per party and per op class. The
difference cost(2) - cost(1) is the measured cost of one encoder layer (forward and backward
and its optimizer share), cost(1) - that difference is the rest (embedding layer norm, head,
loss). Records say `kind: measured` or `kind: composed` (with the layer counts used).

    python experiments/bench_iteration.py model=tiny layers=2 seq_len=16 population=4
    python experiments/bench_iteration.py model=roberta-large compose_from=[1,2] seq_len=128 \
        protocols=[aby3] out_dir=results/iteration
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("sft", "prompt_tuning", "fot_softmax", "fot_rfa", "fot_puma", "fot_secfwt")
# forward-only methods: the run.py method config each one uses (experiments/conf/method/)
FOT_METHOD_CONFIGS = {"fot_softmax": "fot", "fot_rfa": "fot", "fot_puma": "fot_puma",
                      "fot_secfwt": "secfwt"}
LAYER_KEYS = ("attention", "activation", "feature_kind", "normalize_qk", "rfa_trig")


def fot_variant(method: str) -> dict:
    """The layer variants of a forward-only method, read from its method config, so that
    fot_secfwt is exactly `method=secfwt` (fot_rfa: `method=fot` with attention=rfa)."""
    conf_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf", "method")
    conf = OmegaConf.load(os.path.join(conf_dir, FOT_METHOD_CONFIGS[method] + ".yaml"))
    over = {k: conf[k] for k in LAYER_KEYS}
    if method == "fot_rfa":
        over["attention"] = "rfa"
    return over


DEFINITIONS = {
    ("sft", "iteration"): "one Adam step on one batch: forward + backward + update of all "
    "non-embedding parameters, one secure program",
    ("prompt_tuning", "iteration"): "one Adam step on one batch: forward + backward to the "
    "soft prompt + update of the prompt, one secure program",
    ("fot", "query"): "forward of one candidate prompt on one batch (verbalizer logits)",
    ("fot", "generation"): "forward of all population candidates on one batch, one call",
}
NETS = ("lan", "wan100", "wan200")


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def model_config(cfg: DictConfig, method: str, layers: int | None):
    from secfwt_jax.config import ModelConfig

    over = dict(initializer_range=float(cfg.model.initializer_range),
                num_features=int(cfg.num_features))
    if method in FOT_METHOD_CONFIGS:
        over.update(fot_variant(method))
    if layers:
        over["num_hidden_layers"] = int(layers)
    return ModelConfig.preset(cfg.model.name, **over)


def inputs(cfg: DictConfig, config, params, prompt_len: int):
    """(embeds (B, S-L, H), mask, mask_onehot, labels_onehot (B, C)) numpy, and label words."""
    import jax

    from secfwt_jax.model import embed_fn, position_ids

    rng = np.random.default_rng(int(cfg.seed))
    b, text_len = int(cfg.batch), int(cfg.seq_len) - prompt_len
    ids = rng.integers(3, config.vocab_size - 1, (b, text_len)).astype(np.int32)
    ids[:, 0], ids[:, -1] = config.bos_token_id, config.eos_token_id
    ids[:, text_len // 2] = config.mask_token_id
    mask = np.ones((b, text_len), np.int32)
    mask_onehot = np.zeros((b, text_len), np.float32)
    mask_onehot[:, text_len // 2] = 1
    embeds = np.asarray(jax.jit(embed_fn(config, prompt_len))(
        params, ids, position_ids(mask, config, prompt_len)))
    c = int(cfg.num_labels)
    labels = np.eye(c, dtype=np.float32)[rng.integers(0, c, b)]
    words = [int(w) for w in rng.choice(np.arange(3, config.vocab_size - 1), c, replace=False)]
    return (embeds, mask, mask_onehot, labels), words


def measure(cfg: DictConfig, be, method: str, layers: int | None) -> list[tuple[str, int, object]]:
    """[(unit, population, CallCost)] of one method on a model with `layers` encoder layers."""
    from secfwt_jax.baselines import (
        fixed_point_adam,
        prompt_init,
        prompt_step_fn,
        sft_init,
        sft_step_fn,
    )
    from secfwt_jax.model import init_params, verbalizer_fn

    config = model_config(cfg, method, layers)
    params = init_params(config, seed=int(cfg.seed))
    prompt_len = 0 if method == "sft" else int(cfg.prompt_len)
    (embeds, mask, mask_onehot, labels), words = inputs(cfg, config, params, prompt_len)
    rng = np.random.default_rng(int(cfg.seed) + 1)
    weights = be.put(params, owner="model")
    opt = fixed_point_adam(float(cfg.learning_rate))
    out = []
    if method == "sft":
        fn = be.compile(sft_step_fn(config, words, opt))
        args = (weights, be.put(sft_init(params, opt)), embeds, mask, mask_onehot, labels)
        fn.precompile(*args)
        _, cost = fn(*args, reveal=False)
        out.append(("iteration", 1, cost))
    elif method == "prompt_tuning":
        prompt = (0.1 * rng.standard_normal((prompt_len, config.hidden_size))).astype(np.float32)
        fn = be.compile(prompt_step_fn(config, words, opt))
        args = (weights, prompt, be.put(prompt_init(prompt, opt)), embeds, mask, mask_onehot,
                labels)
        fn.precompile(*args)
        _, cost = fn(*args, reveal=False)
        out.append(("iteration", 1, cost))
    else:
        from secfwt_jax.backend.masked_trig import call_trig_masks, model_reveal_fn

        fn = be.compile(verbalizer_fn(config, words, reveal=model_reveal_fn(be, config)))
        pops = [1] + ([int(cfg.population)] if cfg.generation == "measured" else [])
        for p in pops:
            prompts = (0.1 * rng.standard_normal((p, prompt_len, config.hidden_size))).astype(
                np.float32)
            # the data owner's fresh masks of this call (shared like any input)
            extra = call_trig_masks(be, config, p * int(cfg.batch), int(cfg.seq_len), rng=rng)
            fn.precompile(weights, embeds, mask, mask_onehot, prompts, *extra)
            _, cost = fn(weights, embeds, mask, mask_onehot, prompts, *extra)
            out.append(("query" if p == 1 else "generation", p, cost))
    be.delete(weights)
    return out


def cost_figures(cost) -> dict:
    """The measured figures of a CallCost as plain numbers."""
    return dict(
        wall_s=float(cost.wall_s), bytes_total=int(cost.bytes_total),
        bytes_sent=[int(b) for b in cost.bytes_sent],
        send_actions=[int(a) for a in cost.send_actions],
        send_actions_total=int(cost.send_actions_total),
        by_op_class={k: dict(time_s=float(v.time_s), bytes=int(v.bytes),
                             send_actions=int(v.send_actions))
                     for k, v in cost.by_op_class.items()},
        party_order=cost.party_order,
    )


def networks(fig: dict) -> dict:
    """Modelled seconds on each network (secfwt_jax.backend.network's formula)."""
    from secfwt_jax.backend.network import NETWORKS

    out = {}
    for name in NETS:
        net = NETWORKS[name]
        transfer = 8.0 * max(fig["bytes_sent"]) / net.bandwidth_bps
        latency = max(fig["send_actions"]) * net.latency_s
        out[name] = dict(total_s=fig["wall_s"] + transfer + latency, transfer_s=transfer,
                         latency_s=latency, compute_s=fig["wall_s"])
    return out


def compose(f1: dict, f2: dict, n: int) -> dict:
    """cost(n) = cost(1) + (n - 1) (cost(2) - cost(1)), for every measured figure."""

    def lin(a, b):
        if isinstance(a, dict):
            return {k: lin(a[k], b[k]) for k in a}
        if isinstance(a, list):
            return [lin(x, y) for x, y in zip(a, b)]
        if isinstance(a, str):
            return a
        v = a + (n - 1) * (b - a)
        return int(round(v)) if isinstance(a, int) else float(v)

    return lin(f1, f2)


def base_record(cfg, protocol, method, unit, population, config_layers) -> dict:
    key = (method if method in ("sft", "prompt_tuning") else "fot", unit)
    return dict(
        method=method, protocol=protocol, model=cfg.model.name, layers=config_layers,
        seq_len=int(cfg.seq_len), batch=int(cfg.batch), population=population,
        prompt_len=0 if method == "sft" else int(cfg.prompt_len), unit=unit,
        definition=DEFINITIONS[key], field=cfg.field, mode=cfg.mode,
        weights=f"random: init_params(seed={cfg.seed})", command=command_line(),
    )


def run(cfg: DictConfig, on_record=None) -> list[dict]:
    """All records; `on_record(records)` after each one, so a crash keeps what was measured."""
    from secfwt_jax.backend import make_backend

    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; accepted: {', '.join(METHODS)}")
    n_layers = model_config(cfg, "sft", cfg.layers).num_hidden_layers
    layer_counts = list(cfg.compose_from) if cfg.compose_from else [cfg.layers]
    if cfg.compose_from and sorted(int(x) for x in cfg.compose_from) != [1, 2]:
        raise ValueError(f"compose_from must be [1, 2], got {list(cfg.compose_from)}")
    records = []
    for protocol in cfg.protocols:
        for method in cfg.methods:
            measured = {}
            for layers in layer_counts:
                with make_backend(protocol, mode=cfg.mode, field=cfg.field,
                                  fraction_bits=cfg.fraction_bits,
                                  timeout_s=float(cfg.timeout_s)) as be:
                    t = time.perf_counter()
                    results = measure(cfg, be, method, layers)
                    print(f"{protocol} {method} layers={layers}: "
                          f"{time.perf_counter() - t:.1f} s in all", flush=True)
                for unit, pop, cost in results:
                    fig = cost_figures(cost)
                    measured[(unit, layers)] = (pop, fig)
                    nl = model_config(cfg, method, layers).num_hidden_layers
                    rec = dict(base_record(cfg, protocol, method, unit, pop, nl), kind="measured",
                               **fig, networks=networks(fig))
                    records.append(rec)
                    print(summary_line(rec), flush=True)
                    if on_record:
                        on_record(records)
            if cfg.compose_from:
                for unit in sorted({u for u, _ in measured}):
                    (pop, f1), (_, f2) = measured[(unit, 1)], measured[(unit, 2)]
                    fig = compose(f1, f2, n_layers)
                    rec = dict(base_record(cfg, protocol, method, unit, pop, n_layers),
                               kind="composed", composed_from_layers=[1, 2],
                               composition="cost(1) + (N - 1) * (cost(2) - cost(1))",
                               **fig, networks=networks(fig))
                    records.append(rec)
                    print(summary_line(rec), flush=True)
                    if on_record:
                        on_record(records)
    return records


def summary_line(r: dict) -> str:
    return (f"{r['protocol']:7s} {r['method']:13s} {r['unit']:10s} L={r['layers']:<3d} "
            f"P={r['population']:<3d} {r['kind']:8s} wall {r['wall_s']:.2f} s  "
            f"GB {r['bytes_total'] / 1e9:.4g}  LAN {r['networks']['lan']['total_s']:.3g} s")


def markdown(records: list[dict]) -> str:
    head = ("| method | protocol | unit | layers | P | kind | wall s | GB total | GB per party | "
            "send actions (max party) | LAN s | WAN100 s | WAN200 s |")
    lines = [head, "|" + "---|" * 13]
    for r in records:
        n = r["networks"]
        lines.append(
            f"| {r['method']} | {r['protocol']} | {r['unit']} | {r['layers']} | "
            f"{r['population']} | {r['kind']} | {r['wall_s']:.3g} | {r['bytes_total'] / 1e9:.4g} "
            f"| {' / '.join(f'{b / 1e9:.3g}' for b in r['bytes_sent'])} | "
            f"{max(r['send_actions'])} | {n['lan']['total_s']:.3g} | "
            f"{n['wan100']['total_s']:.3g} | {n['wan200']['total_s']:.3g} |")
    notes = ["", "Units: " + "; ".join(f"{m} / {u}: {d}" for (m, u), d in DEFINITIONS.items())
             + ".", "wall s, bytes and send actions are measured on this machine (kind "
             "measured) or composed from measured 1- and 2-layer programs (kind composed); "
             "network times are modelled (wall + max-party bytes / bandwidth + max-party send "
             "actions x latency; docs/backend.md). GB = 10^9 bytes."]
    if records:
        notes.append(f"Command: `{records[0]['command']}`")
    return "\n".join(lines + notes) + "\n"


def plots(records: list[dict], path_prefix: str) -> list[str]:
    """Bar plots of time (LAN) and bytes per method and protocol, stacked by op class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = ("matmul", "exp", "reciprocal", "comparison", "trig", "other")
    keep = {}
    for r in records:  # per (method-unit, protocol): the composed record if any, else measured
        key = (f"{r['method']}\n{r['unit']}", r["protocol"])
        if key not in keep or r["kind"] == "composed" or r["layers"] > keep[key]["layers"]:
            keep[key] = r
    labels = [f"{m}\n{p}" for m, p in keep]
    paths = []
    for what, unit in (("bytes", 1e9), ("time_s", 1.0)):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4))
        bottom = np.zeros(len(keep))
        for c in classes:
            vals = np.array([r["by_op_class"].get(c, {}).get(what, 0) / unit
                             for r in keep.values()])
            ax.bar(labels, vals, bottom=bottom, label=c)
            bottom += vals
        ax.set_ylabel("GB sent (all parties)" if what == "bytes" else "party time s (mean)")
        ax.set_title(f"one iteration: {'bytes' if what == 'bytes' else 'time'} by op class")
        ax.legend(fontsize=7)
        plt.setp(ax.get_xticklabels(), fontsize=7)
        fig.tight_layout()
        path = f"{path_prefix}_{what}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_outputs(records: list[dict], directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "iteration.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(directory, "iteration.md"), "w") as f:
        f.write(markdown(records))
    plots(records, os.path.join(directory, "iteration"))


@hydra.main(version_base=None, config_path="conf", config_name="bench_iteration")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run_dir = HydraConfig.get().runtime.output_dir
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    def save(records):
        write_outputs(records, run_dir)
        if cfg.out_dir:
            write_outputs(records, str(cfg.out_dir))

    save(run(cfg, on_record=save))
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()
