"""One generation of lambda candidates: one batched secure call vs lambda separate calls.

Both evaluate the same lambda x B sequences (same shapes, the same candidate prompts) through
the tuning loop's PromptEvaluator; MPC rounds are paid per op, so the batched call pays them
once. Wall time and bytes are measured (SPU simulation on this machine); lan / wan100 times are
modelled (docs/backend.md). Random weights (tiny model unless --model says otherwise).

    python experiments/bench_batching.py 'protocols=[aby3,semi2k]' dealer=trusted_first_party \
        out=results/batching
    python experiments/bench_batching.py --protocols aby3 semi2k --dealer trusted_first_party \
        --out results/batching                                  # the legacy form, translated
"""

from __future__ import annotations

import dataclasses
import json

import common
import numpy as np
from omegaconf import DictConfig

from secfwt_jax import ModelConfig, init_params
from secfwt_jax.backend import estimate_time, make_backend, protocol_label, sum_costs
from secfwt_jax.backend.common import DEALER_PROTOCOLS
from secfwt_jax.tasks.encode import Batch
from secfwt_jax.tasks.planted import random_batch
from secfwt_jax.tuning.evaluator import PromptEvaluator


@dataclasses.dataclass
class Config(common.AppConfig):
    """`python experiments/bench_batching.py protocols=[aby3,semi2k] dealer=trusted_first_party
    out=results/batching` (legacy form: `--protocols aby3 semi2k --out results/batching`)."""

    model: str = "tiny"  # preset name (random weights)
    protocols: list[str] = dataclasses.field(default_factory=lambda: ["aby3", "semi2k"])
    popsize: int = 20  # lambda candidates of one generation
    batch: int = 16  # B examples
    seq_len: int = 12  # text tokens per example (the soft prompt comes on top)
    prompt_len: int = 4  # L soft-prompt tokens
    out: str = "results/batching"  # batching.json and batching.md go here
    # semi2k's dealer (required with semi2k): trusted_first_party, insecure against party 0
    dealer: str | None = None


def measure(protocol, cfg, params, batch, prompts, words, dealer=None):
    """{'batched': CallCost, 'separate': summed CallCost} for one generation."""
    with make_backend(protocol, timeout_s=600, dealer=dealer) as be:
        ev = PromptEvaluator(be, cfg, be.put(params, owner="model"), words,
                             prompt_len=prompts.shape[1])
        examples = ev.share_examples(batch)
        # warm both shapes up so that neither side pays compilation
        ev.logits(examples, prompts)
        ev.logits(examples, prompts[:1])
        n = len(ev.costs)
        batched_out = ev.logits(examples, prompts)
        batched = ev.costs[n]
        separate_out = np.concatenate([ev.logits(examples, p[None]) for p in prompts])
        separate = sum_costs(ev.costs[n + 1:])
    return batched, separate, float(np.abs(batched_out - separate_out).max())


def row(cost):
    return dict(
        wall_s=cost.wall_s, bytes_total=int(cost.bytes_total),
        bytes_per_party=[int(b) for b in cost.bytes_sent],
        send_actions=int(cost.send_actions_total),
        lan_s=estimate_time(cost, "lan").total_s, wan100_s=estimate_time(cost, "wan100").total_s,
    )


@common.hydra_app(Config, "bench_batching")
def main(args: DictConfig) -> None:
    cfg = ModelConfig.preset(args.model, initializer_range=0.3 if args.model == "tiny" else 0.02,
                             attention="softmax_puma", activation="gelu_puma")
    params = init_params(cfg, 0)
    rng = np.random.default_rng(0)
    ids = random_batch(cfg, args.batch, args.seq_len, rng)
    batch = Batch(ids, (ids != cfg.pad_token_id).astype(np.int32),
                  (ids == cfg.mask_token_id).astype(np.float32),
                  np.zeros(args.batch, np.int32), np.zeros(args.batch, bool))
    prompts = 0.3 * rng.standard_normal((args.popsize, args.prompt_len, cfg.hidden_size))
    prompts = prompts.astype(np.float32)
    setting = dict(
        model=args.model, layers=cfg.num_hidden_layers, hidden=cfg.hidden_size,
        attention=cfg.attention, activation=cfg.activation, field="FM64", fraction_bits=18,
        mode="sim (parties as threads, one 2-core machine)", popsize=args.popsize,
        batch=args.batch, seq_len=args.seq_len + args.prompt_len, weights="random",
        command=common.command_line(),
    )
    records = []
    for protocol in args.protocols:
        dealer = args.dealer if protocol in DEALER_PROTOCOLS else None
        batched, separate, diff = measure(protocol, cfg, params, batch, prompts, [5, 6], dealer)
        b, s = row(batched), row(separate)
        records.append(dict(protocol=protocol, **({"dealer": dealer} if dealer else {}),
                            batched=b, separate=s, max_abs_diff=diff,
                            ratio={k: s[k] / b[k] for k in ("wall_s", "bytes_total",
                                                             "send_actions", "lan_s", "wan100_s")}))
        print(json.dumps(records[-1]), flush=True)
    lines = [
        f"Setting: {args.model} ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}), "
        f"{cfg.attention} + {cfg.activation}, FM64, lambda={args.popsize}, B={args.batch}, "
        f"seq {setting['seq_len']} (prompt {args.prompt_len}), random weights, SPU simulation "
        f"on 2 CPU cores. wall_s and bytes measured; lan/wan100 modelled. "
        f"Command: `{setting['command']}`",
        "",
    ]
    rows = []
    for r in records:
        label = protocol_label(r["protocol"], r.get("dealer"))
        for name, calls in (("batched", f"1 call, {args.popsize} candidates"),
                            ("separate", f"{args.popsize} calls")):
            c = r[name]
            rows.append([label, calls, f"{c['wall_s']:.1f}", f"{c['bytes_total']:,}",
                         f"{c['send_actions']:,}", f"{c['lan_s']:.1f}", f"{c['wan100_s']:.1f}"])
        q = r["ratio"]
        rows.append([label, "separate / batched", f"{q['wall_s']:.2f}x",
                     f"{q['bytes_total']:.2f}x", f"{q['send_actions']:.1f}x", f"{q['lan_s']:.2f}x",
                     f"{q['wan100_s']:.2f}x"])
    lines += common.markdown_table(
        ["protocol", "calls", "wall_s", "bytes_total", "send_actions", "lan_s (modelled)",
         "wan100_s (modelled)"], rows)
    common.write_outputs(args.out, "batching", {"setting": setting, "records": records},
                         "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
