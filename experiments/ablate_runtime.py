"""SPU runtime options and SEMI2K weight caching on the SecFwT query (issue 15, item 3).

The program: method=secfwt's forward (RFA with l2-normalised q/k, the one-round masked cos/sin
with fresh masks from the data owner each call, PUMA's GeLU; conf/method/secfwt.yaml), the
verbalizer logits of P candidate prompts on B examples (P = 1: a query, bench_iteration's
fot_secfwt unit "query"; P = popsize: one generation), on a preset-shaped model with `layers`
encoder layers and random weights, seq_len tokens including prompt_len prompt tokens. The same
weights and inputs for every variant.

study=options: each variant is a set of SPU RuntimeConfig attributes (spu_config.runtime_config's
`options`) on a fresh backend of `protocol`. Per variant: bytes and send actions (exact, SPU's
link counters), the call's wall time (controller clock, compilation excluded) and the max abs
error of the revealed logits against the plaintext (float32) backend's. The variants run
interleaved, `repeats` rounds of all of them in one run, on a machine shared with other jobs:
the table gives each variant's median wall time and its ratio to the default's, and only
ratios within one run mean anything.

study=semi2k_cache: SEMI2K with SPU's TrustedFirstParty dealer ("semi2k (TFP)", the only SEMI2K
dealer of this wheel; insecure against party 0), the weights put once, `calls` calls in a row,
without and with secfwt_jax.backend.spu_cache.cached_weights_fn (SPU's make_cached_var on every
weight): bytes, send actions, wall time and error of each call. The first cached call fills the
cache; the later ones are the steady state of a tuning run.

    python experiments/ablate_runtime.py                               # roberta-base, 1 layer, ABY3
    python experiments/ablate_runtime.py model=tiny repeats=1          # a smoke run
    python experiments/ablate_runtime.py study=semi2k_cache model=tiny 'populations=[1,20]'
Writes <study>_<model>_L<layers>_<protocol>.{json,md,config.yaml} under `out`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from typing import Any

import common
import numpy as np
from omegaconf import OmegaConf

from secfwt_jax.backend import make_backend
from secfwt_jax.backend.masked_trig import call_trig_masks, model_ops
from secfwt_jax.config import check_choice
from secfwt_jax.model import verbalizer_fn

# name -> SPU RuntimeConfig attributes (enum values by member name): only options that leave
# the protocol, the field, the fraction bits and what is revealed unchanged.
VARIANTS = {
    "default": {},
    "inter_op_par": dict(experimental_enable_inter_op_par=True),
    "intra_op_par": dict(experimental_enable_intra_op_par=True),
    "inter_intra_op_par": dict(experimental_enable_inter_op_par=True,
                               experimental_enable_intra_op_par=True),
    "trunc_allow_msb_error": dict(trunc_allow_msb_error=True),
    "lower_accuracy_rsqrt": dict(enable_lower_accuracy_rsqrt=True),
    "div_goldschmidt_iters_1": dict(fxp_div_goldschmidt_iters=1),
    "exp_iters_6": dict(fxp_exp_iters=6),
    "exp_pade": dict(fxp_exp_mode="EXP_PADE"),
    "exp_prime": dict(fxp_exp_mode="EXP_PRIME", experimental_enable_exp_prime=True),
    "disable_mmul_split": dict(experimental_disable_mmul_split=True),
}
STUDIES = ("options", "semi2k_cache")


@dataclasses.dataclass
class Config(common.AppConfig):
    """The ablation's settings."""

    defaults: list[Any] = dataclasses.field(
        default_factory=common.hydra_defaults({"model": "roberta-base"}))
    model: common.ModelGroup = dataclasses.field(default_factory=common.ModelGroup)
    study: str = "options"  # options | semi2k_cache
    layers: int = 1  # encoder layers of the model
    seq_len: int = 128  # tokens per sequence, soft prompt included
    prompt_len: int = 50  # soft-prompt tokens
    batch: int = 1  # B examples per call
    populations: list[int] = dataclasses.field(default_factory=lambda: [1])  # P per call
    protocol: str = "aby3"  # study=options (semi2k_cache: semi2k with TFP)
    repeats: int = 2  # study=options: rounds of all variants, interleaved
    variants: list[str] | None = None  # study=options: names from VARIANTS (null: all)
    calls: int = 3  # study=semi2k_cache: calls in a row on the same resident weights
    activation: str | None = None  # null: method=secfwt's (gelu_puma); e.g. gelu_puma_fused
    rfa_lean: bool | None = None  # null: method=secfwt's (false)
    # how the machine was used while it ran (said in the record)
    machine: str = "shared 2-core CPU, other jobs running"
    timeout_s: float = 3600
    seed: int = 0
    out: str = os.path.join("results", "runtime_ablation")


def secfwt_layers(cfg) -> dict:
    """method=secfwt's layer settings, read from its Hydra config (the one run.py uses), with
    cfg.activation (and cfg.rfa_lean) in place of its own when set (ModelConfig checks them)."""
    conf = OmegaConf.load(os.path.join(common.CONF_DIR, "method", "secfwt.yaml"))
    layers = {k: conf[k] for k in common.METHOD_LAYER_KEYS}
    if cfg.get("activation"):
        layers["activation"] = cfg.activation
    if cfg.get("rfa_lean") is not None:
        layers["rfa_lean"] = bool(cfg.rfa_lean)
    return layers


def setup(cfg):
    """(ModelConfig, params, weights note, {P: (embeds, mask, mask_onehot, prompts)}, words)."""
    config, params, weights = common.build_model(cfg.model, cfg.seed, cfg.layers,
                                                 **secfwt_layers(cfg))
    rng = np.random.default_rng(int(cfg.seed))
    text_len = int(cfg.seq_len) - int(cfg.prompt_len)
    ids, mask, mask_onehot = common.random_examples(config, rng, int(cfg.batch), text_len)
    embeds = common.embed_examples(config, params, ids, mask, int(cfg.prompt_len))
    data = {int(p): (embeds, mask, mask_onehot, common.random_prompts(
        rng, int(p), int(cfg.prompt_len), config.hidden_size)) for p in cfg.populations}
    words = (10, 20)
    return config, params, weights, data, words


def calls(be, cfg, config, params, data, words, n: int, cache: bool = False):
    """[(P, revealed logits (P, B, C), CallCost or None)] of n calls per population on `be`,
    the weights put once."""
    f = verbalizer_fn(config, words, ops=model_ops(be, config))
    if cache:
        from secfwt_jax.backend.spu_cache import cached_weights_fn

        f = cached_weights_fn(f, be.name)
    weights = be.put(params, owner="model")
    fn = be.compile(f)
    out = []
    for p, (embeds, mask, mask_onehot, prompts) in data.items():
        for _ in range(n):
            extra = call_trig_masks(be, config, p * int(cfg.batch), int(cfg.seq_len))
            args = (weights, embeds, mask, mask_onehot, prompts, *extra)
            fn.precompile(*args)
            logits, cost = fn(*args)
            out.append((p, np.asarray(logits), cost))
    be.delete(weights)
    return out


def references(cfg, config, params, data, words) -> dict:
    with make_backend("plaintext") as be:
        return {p: y for p, y, _ in calls(be, cfg, config, params, data, words, 1)}


def row(cost, err: float, **extra) -> dict:
    return dict(extra, bytes_total=int(cost.bytes_total),
                send_actions_total=int(cost.send_actions_total), wall_s=round(cost.wall_s, 3),
                max_abs_err=err)


def setting(cfg, config, weights, **extra) -> dict:
    return dict(
        model=cfg.model.name, layers=config.num_hidden_layers, hidden=config.hidden_size,
        method="secfwt (" + ", ".join(f"{k}={v}" for k, v in secfwt_layers(cfg).items()) + ")",
        seq_len=int(cfg.seq_len), prompt_len=int(cfg.prompt_len), batch=int(cfg.batch),
        field="FM64", fraction_bits=18, mode="sim", weights=weights,
        machine=f"{cfg.machine}: wall times only comparable within "
        "this run", **extra)


def study_options(cfg, save=None) -> dict:
    names = list(cfg.variants) if cfg.variants else list(VARIANTS)
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variants {bad}; accepted: {', '.join(VARIANTS)}")
    config, params, weights, data, words = setup(cfg)
    ref = references(cfg, config, params, data, words)
    runs: dict = {n: [] for n in names}
    errors: dict = {}

    def result(runs):
        return dict(setting=setting(cfg, config, weights, protocol=str(cfg.protocol),
                                    repeats=int(cfg.repeats)),
                    variants={n: VARIANTS[n] for n in names}, runs=runs, errors=errors,
                    summary=summarise(runs))

    for r in range(int(cfg.repeats)):
        for name in names:
            if name in errors:
                continue
            try:
                with make_backend(str(cfg.protocol), timeout_s=float(cfg.timeout_s),
                                  runtime_options=dict(VARIANTS[name])) as be:
                    res = calls(be, cfg, config, params, data, words, 1)
            except Exception as e:  # an option this build or protocol refuses: record why
                msg = " ".join(str(e).split())  # one line: SPU's message without its stack
                errors[name] = f"{type(e).__name__}: {msg.split(' stacktrace:')[0][:300]}"
                print(f"{name}: FAILED {errors[name]}", flush=True)
                continue
            for p, y, cost in res:
                runs[name].append(row(cost, float(np.abs(y - ref[p]).max()), round=r, P=p))
                print(name, json.dumps(runs[name][-1]), flush=True)
            if save:  # after every variant: a stopped run keeps what it measured
                save(result(runs))

    return result(runs)


def summarise(runs: dict) -> list[dict]:
    rows = []
    base = runs.get("default") or []
    for name, rs in runs.items():
        for p in sorted({x["P"] for x in rs}):
            mine = [x for x in rs if x["P"] == p]
            ref = [x for x in base if x["P"] == p]
            wall = statistics.median(x["wall_s"] for x in mine)
            rows.append(dict(
                variant=name, P=p, bytes_total=mine[0]["bytes_total"],
                bytes_same_every_round=len({x["bytes_total"] for x in mine}) == 1,
                send_actions_total=mine[0]["send_actions_total"], median_wall_s=wall,
                bytes_ratio=mine[0]["bytes_total"] / ref[0]["bytes_total"] if ref else None,
                wall_ratio=wall / statistics.median(x["wall_s"] for x in ref) if ref else None,
                max_abs_err=max(x["max_abs_err"] for x in mine), rounds=len(mine)))
    return rows


def study_semi2k_cache(cfg, save=None) -> dict:
    config, params, weights, data, words = setup(cfg)
    ref = references(cfg, config, params, data, words)
    runs = {}
    for cache in (False, True):
        name = "cached weights" if cache else "no cache"
        with make_backend("semi2k", dealer="trusted_first_party",
                          timeout_s=float(cfg.timeout_s)) as be:
            res = calls(be, cfg, config, params, data, words, int(cfg.calls), cache=cache)
        runs[name] = [row(cost, float(np.abs(y - ref[p]).max()), P=p, call=i % int(cfg.calls))
                      for i, (p, y, cost) in enumerate(res)]
        for x in runs[name]:
            print(name, json.dumps(x), flush=True)
        rec = dict(setting=setting(cfg, config, weights, protocol="semi2k (TFP)",
                                   calls=int(cfg.calls)), runs=runs)
        if save:
            save(rec)
    return rec


def markdown_options(rec: dict) -> list[str]:
    opts = {n: ", ".join(f"{k}={v}" for k, v in o.items()) or "-"
            for n, o in rec["variants"].items()}
    rows = [[r["variant"], opts[r["variant"]], r["P"],
             f"{r['bytes_total']:,}" + ("" if r["bytes_same_every_round"] else " (varies)"),
             f"{r['bytes_ratio']:.4f}", f"{r['send_actions_total']:,}",
             f"{r['median_wall_s']:.2f}", f"{r['wall_ratio']:.2f}", f"{r['max_abs_err']:.2e}",
             r["rounds"]] for r in rec["summary"]]
    rows += [[n, f"refused: {why}", "", "", "", "", "", "", "", 0]
             for n, why in rec["errors"].items()]
    return common.markdown_table(
        ["variant", "options", "P", "bytes", "bytes / default", "send actions",
         "median wall s", "wall / default", "max abs err vs plaintext", "rounds"], rows)


def markdown_cache(rec: dict) -> list[str]:
    rows = []
    for name, rs in rec["runs"].items():
        for x in rs:
            rows.append([name, x["P"], x["call"] + 1, f"{x['bytes_total']:,}",
                         f"{x['send_actions_total']:,}", f"{x['wall_s']:.2f}",
                         f"{x['max_abs_err']:.2e}"])
    return common.markdown_table(["weights", "P", "call", "bytes", "send actions", "wall s",
                                  "max abs err vs plaintext"], rows)


def markdown(rec: dict, study: str) -> str:
    s = rec["setting"]
    lines = [f"# {study} on the SecFwT forward: {s['model']} ({s['layers']} layer(s)), "
             f"{s['protocol']}", "", f"Command: `{rec['command']}`  ",
             f"Setting: {s['method']}; seq {s['seq_len']} ({s['prompt_len']} prompt tokens), "
             f"B = {s['batch']}, {s['field']} ({s['fraction_bits']} fraction bits), SPU "
             f"{s['mode']}; {s['weights']}; {s['machine']}. Bytes and send actions exact "
             f"(SPU's link counters); wall s: the call, compilation excluded.", ""]
    lines += markdown_options(rec) if study == "options" else markdown_cache(rec)
    return "\n".join(lines) + "\n"


@common.hydra_app(Config, "ablate_runtime")
def main(cfg) -> None:
    check_choice("study", cfg.study, STUDIES)
    t0 = time.perf_counter()
    protocol = cfg.protocol if cfg.study == "options" else "semi2k"
    stem = f"{cfg.study}_{cfg.model.name}_L{cfg.layers}_{protocol}"

    def save(rec):
        rec = dict(command=common.command_line(), **rec,
                   run_s=round(time.perf_counter() - t0, 1))
        common.write_outputs(cfg.out, stem, rec, markdown(rec, cfg.study), cfg=cfg)
        return rec

    study = study_options if cfg.study == "options" else study_semi2k_cache
    print(markdown(save(study(cfg, save)), cfg.study))


if __name__ == "__main__":
    main()
