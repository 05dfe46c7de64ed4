"""One cell of the attention ablation: one kernel under one protocol at one sequence length.

The attention block of one roberta-base-shaped layer (12 heads, head dim 64, batch 1): q, k, v
come from a random x (seq, 768) ~ N(0, 1) and random N(0, 0.02) weights (Hugging Face's
initialiser), computed in plaintext and secret-shared as the kernel's inputs, with the padding
mask; the measured call is the kernel alone (q, k, v, mask) -> (1, 12, seq, 64), revealed.
Costs are those of one warm call: the backend first runs a small warm-up program (Cheetah sets
up its oblivious transfers on first use), and the compile time is not counted.

    python experiments/attention_cell.py attention=rfa_masked protocol=aby3 seq_len=64

Appends one record to `records` (default OUT/records.jsonl, OUT = results/attention):
attention, protocol, seq_len, wall_s, bytes_total, send_actions, max_abs_err, setting, command.
experiments/attention_grid.py runs every cell in a subprocess; attention_report.py tabulates.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import common
import numpy as np
from omegaconf import MISSING

LAYER = common.ATTENTION_LAYER


@dataclasses.dataclass
class Config(common.AppConfig):
    """One cell (legacy form: --attention rfa_masked --protocol aby3 --seq-len 64)."""

    attention: str = MISSING  # one of common.ATTENTION_KERNELS
    protocol: str = MISSING  # one of common.ATTENTION_PROTOCOLS
    seq_len: int = MISSING
    repeats: int = 3
    repeat_below_s: float = 20.0  # repeat only calls shorter than this (s)
    party_timeout: float = 3600.0
    head_chunks: int = 1  # run the heads in this many separate calls (memory), costs summed
    out: str = os.path.join("results", "attention")
    records: str | None = None  # default: OUT/records.jsonl
    field: str = "FM64"  # FM64 | FM128
    fraction_bits: int = 18
    seed: int = 0


def attention_fn(name: str, reveal):
    """f(q, k, v, mask[, trig_masks]) for one of ATTENTION_KERNELS (secfwt_jax.layers)."""
    from secfwt_jax import layers
    from secfwt_jax.secure_trig import masked_cos_sin

    w = layers.random_features(LAYER["num_features"], LAYER["head_dim"], LAYER["feature_kind"], 0)
    if name == "softmax_naive":
        return lambda q, k, v, m: layers.softmax_attention(q, k, v, m)
    if name == "softmax_puma":
        return lambda q, k, v, m: layers.softmax_puma_attention(q, k, v, m)
    if name == "2quad":
        return lambda q, k, v, m: layers.two_quad_attention(q, k, v, m)
    if name == "favor":
        return lambda q, k, v, m: layers.favor_attention(q, k, v, m, w)
    if name == "rfa_builtin":
        return lambda q, k, v, m: layers.rfa_attention(q, k, v, m, w)
    if name == "rfa_masked":
        return lambda q, k, v, m, tm: layers.rfa_attention(
            q, k, v, m, w, False, functools.partial(masked_cos_sin, masks=tm, reveal=reveal))
    raise ValueError(f"unknown attention {name!r}; accepted: "
                     f"{', '.join(common.ATTENTION_KERNELS)}")


def call_in_head_chunks(fn, be, qkv_mask, masked: bool, chunks: int):
    """One measured call of the kernel, run as `chunks` calls on groups of heads (heads are
    independent in every kernel). Returns (output (1, h, S, d), combined cost): wall time,
    bytes and per-op figures summed over the chunk calls; send actions per party the largest
    of one chunk call, i.e. the sequential rounds a single call over all heads would need."""
    from secfwt_jax.backend import sum_costs
    from secfwt_jax.backend.masked_trig import trig_masks_for

    q, k, v, mask = qkv_mask
    heads, seq_len = q.shape[1], q.shape[2]
    if heads % chunks:
        raise ValueError(f"head_chunks {chunks} does not divide the {heads} heads")
    size = heads // chunks
    outs, costs = [], []
    for c in range(chunks):
        hs = slice(c * size, (c + 1) * size)
        shape = (2, 1, size, seq_len, LAYER["num_features"])
        extra = (trig_masks_for(be, shape),) if masked else ()  # masks from os.urandom
        out, cost = fn(q[:, hs], k[:, hs], v[:, hs], mask, *extra)
        outs.append(np.asarray(out))
        costs.append(cost)
    if chunks == 1:
        return outs[0], costs[0]
    total = sum_costs(costs)
    total.send_actions = [max(c.send_actions[p] for c in costs) for p in range(total.n_parties)]
    return np.concatenate(outs, axis=1), total


def run_cell(args) -> dict:
    """Measure one (attention, protocol, seq_len) cell; returns its record."""
    from secfwt_jax.backend import make_backend
    from secfwt_jax.backend.masked_trig import reveal_fn, trig_masks_for
    from secfwt_jax.config import check_choice

    check_choice("attention", args.attention, common.ATTENTION_KERNELS)
    check_choice("protocol", args.protocol, common.ATTENTION_PROTOCOLS)
    q, k, v, mask = common.random_qkv(args.seq_len, LAYER["heads"], LAYER["head_dim"], args.seed,
                                      LAYER["init_std"])
    ref = common.exact_softmax_attention(q, k, v)
    masked = args.attention == "rfa_masked"
    be = make_backend(args.protocol, mode="sim", field=args.field,
                      fraction_bits=args.fraction_bits, timeout_s=args.party_timeout)
    try:
        plain = make_backend("plaintext")
        f = attention_fn(args.attention, reveal_fn(args.protocol))
        mask_shape = (2, 1, LAYER["heads"], args.seq_len, LAYER["num_features"])
        extra_plain = (trig_masks_for(plain, mask_shape),) if masked else ()
        plain_out, _ = plain.compile(f)(q, k, v, mask, *extra_plain)
        common.warm_up(be)
        fn = be.compile(f)
        calls = []
        for rep in range(args.repeats):
            calls.append(call_in_head_chunks(fn, be, (q, k, v, mask), masked, args.head_chunks))
            if rep == 0 and calls[0][1].wall_s > args.repeat_below_s:
                break
    finally:
        be.close()
    walls = [c.wall_s for _, c in calls]
    out, best = common.median_item(calls, key=lambda oc: oc[1].wall_s)  # the median call
    extra_setting = {"seed": args.seed, "repeats_run": len(calls)}
    argv = [f"attention={args.attention}", f"protocol={args.protocol}",
            f"seq_len={args.seq_len}"]
    if args.head_chunks > 1:
        extra_setting["head_chunks"] = args.head_chunks
        extra_setting["chunked"] = (
            f"run as {args.head_chunks} calls of {LAYER['heads'] // args.head_chunks} heads (one "
            "12-head call does not fit the shared machine's memory): wall time and bytes summed, "
            "send actions those of one chunk call"
        )
        argv.append(f"head_chunks={args.head_chunks}")
    return {
        "status": "ok", "attention": args.attention, "protocol": args.protocol,
        "seq_len": args.seq_len, "wall_s": best.wall_s, "wall_s_all": walls,
        "bytes_total": best.bytes_total, "send_actions": best.send_actions_total,
        "bytes_per_party": list(best.bytes_sent), "exec_s": list(best.exec_s),
        "send_actions_per_party": list(best.send_actions),
        "modelled_s": {k: v["total_s"] for k, v in best.modelled()["networks"].items()},
        "input_share_bytes": best.input_share_bytes,
        "max_abs_err": float(np.max(np.abs(out - ref))),
        "plaintext_max_abs_err": float(np.max(np.abs(np.asarray(plain_out) - ref))),
        "mpc_vs_plaintext_max_abs_err": float(np.max(np.abs(out - np.asarray(plain_out)))),
        "ref_max_abs": float(np.max(np.abs(ref))),
        "by_op_class": {k: v.to_dict() for k, v in best.by_op_class.items()},
        "setting": common.attention_setting(be, extra_setting),
        "command": common.command_line([__file__, *argv]),
        "unix_time": time.time(),
    }


@common.hydra_app(Config, "attention_cell")
def main(cfg) -> None:
    rec = run_cell(cfg)
    common.append_jsonl(cfg.records or os.path.join(cfg.out, "records.jsonl"), rec)
    print(json.dumps({k: rec[k] for k in ("attention", "protocol", "seq_len", "wall_s",
                                          "bytes_total", "send_actions", "max_abs_err")}))


if __name__ == "__main__":
    main()
