"""The padding mask secret (default) vs public (lengths revealed, as PUMA does): bytes and time of
one secure forward of the verbalizer logits.

The same verbalizer program runs twice on one backend: once with the attention mask shared as a
secret input, once with it folded in as a public constant
(secfwt_jax.tuning.public_mask.with_public_mask). Bytes are exact (SPU's link counters); times
are single runs on a shared machine. Inputs: random token ids with random lengths (padding
present), random weights, P prompts x B examples.

From the repository root:
    python experiments/bench_public_mask.py --model roberta-base --layers 1 --seq 128
    python experiments/bench_public_mask.py --model tiny            # seconds, a smoke run
Writes results/public_mask/public_mask_<model>_L<layers>_s<seq>_<protocol>.json and .md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import common
import jax
import numpy as np

from secfwt_jax.backend import make_backend
from secfwt_jax.backend.masked_trig import model_ops
from secfwt_jax.config import PRESETS, check_choice
from secfwt_jax.model import verbalizer_fn
from secfwt_jax.tuning.public_mask import with_public_mask


@dataclasses.dataclass
class Config(common.AppConfig):
    """The benchmark's settings (legacy form: --model tiny --prompt-len 2)."""

    model: str = "roberta-base"  # a preset: tiny | roberta-base | roberta-large
    layers: int = 1
    seq: int = 128  # text tokens per example (padded)
    batch: int = 1
    prompts: int = 1
    prompt_len: int = 0
    attention: str = "softmax_puma"  # the project's fot_puma default
    activation: str = "gelu_puma"
    protocol: str = "aby3"
    timeout_s: float = 1800
    seed: int = 0
    out: str = os.path.join("results", "public_mask")


def make_inputs(args, cfg, params):
    """(embeds (B, S, H), mask, mask_onehot, prompt (P, L, H)): padded random examples."""
    rng = np.random.default_rng(args.seed)
    ids, mask, mask_onehot = common.random_examples(cfg, rng, args.batch, args.seq, padded=True)
    embeds = common.embed_examples(cfg, params, ids, mask, args.prompt_len)
    prompt = common.random_prompts(rng, args.prompts, args.prompt_len, cfg.hidden_size)
    return embeds, mask, mask_onehot, prompt


def run(args) -> dict:
    check_choice("model preset", args.model, tuple(PRESETS))
    cfg, params, _ = common.build_model(args.model, args.seed, args.layers,
                                        attention=args.attention, activation=args.activation)
    words = (10, 20)
    embeds, mask, mask_onehot, prompt = make_inputs(args, cfg, params)
    ref = np.asarray(jax.jit(verbalizer_fn(cfg, words))(params, embeds, mask, mask_onehot, prompt))
    rows = {}
    with make_backend(args.protocol, timeout_s=args.timeout_s) as be:
        handle = be.put(params, owner="model")
        f = verbalizer_fn(cfg, words, ops=model_ops(be, cfg))
        cases = {
            "secret_mask": (be.compile(f), (handle, embeds, mask, mask_onehot, prompt)),
            "public_mask": (be.compile(with_public_mask(f, mask)),
                            (handle, embeds, mask_onehot, prompt)),
        }
        for name, (fn, inputs) in cases.items():
            t = time.perf_counter()
            fn.precompile(*inputs)
            compile_s = time.perf_counter() - t
            out, cost = fn(*inputs)
            rows[name] = dict(
                bytes_total=int(cost.bytes_total), send_actions_total=cost.send_actions_total,
                wall_s=round(cost.wall_s, 3), compile_s=round(compile_s, 3),
                max_abs_err_vs_plaintext=float(np.abs(np.asarray(out) - ref).max()),
            )
            print(name, json.dumps(rows[name]), flush=True)
    sec, pub = rows["secret_mask"], rows["public_mask"]
    rec = dict(
        command=common.command_line(),
        setting=dict(
            model=args.model, layers=args.layers, hidden=cfg.hidden_size,
            heads=cfg.num_attention_heads, attention=cfg.attention, activation=cfg.activation,
            seq=args.seq, batch=args.batch, prompts=args.prompts, prompt_len=args.prompt_len,
            real_tokens=int(mask.sum()), protocol=args.protocol, mode="sim", field="FM64",
            weights="random (init_params)",
            note="bytes exact (SPU link counters); wall times single runs on a machine shared "
            "with other jobs",
        ),
        results=rows,
        saving=dict(bytes=sec["bytes_total"] - pub["bytes_total"],
                    bytes_fraction=(sec["bytes_total"] - pub["bytes_total"]) / sec["bytes_total"],
                    send_actions=sec["send_actions_total"] - pub["send_actions_total"]),
    )
    tag = f"public_mask_{args.model}_L{args.layers}_s{args.seq}_{args.protocol}"
    common.write_outputs(args.out, tag, rec, markdown(rec), cfg=args)
    print(markdown(rec))
    return rec


def markdown(rec: dict) -> str:
    s, sv = rec["setting"], rec["saving"]
    lines = [
        f"# Padding mask secret vs public: {s['model']} ({s['layers']} layer(s)), "
        f"{s['protocol']}",
        "",
        f"Command: `{rec['command']}`  ",
        f"Setting: {s['attention']} + {s['activation']}, seq {s['seq']} (+ {s['prompt_len']} "
        f"prompt), B = {s['batch']}, P = {s['prompts']}, {s['field']}, SPU {s['mode']}; "
        f"{s['weights']}; {s['note']}.",
        "",
        *common.markdown_table(
            ["mask", "bytes", "send actions", "wall s", "compile s", "max abs err vs plaintext"],
            [[name, f"{r['bytes_total']:,}", f"{r['send_actions_total']:,}", r["wall_s"],
              r["compile_s"], f"{r['max_abs_err_vs_plaintext']:.2e}"]
             for name, r in rec["results"].items()]),
    ]
    lines += ["", f"Saving of the public mask: {sv['bytes']:,} bytes "
              f"({100 * sv['bytes_fraction']:.2f}% of the secret-mask call), "
              f"{sv['send_actions']:,} send actions."]
    return "\n".join(lines) + "\n"


@common.hydra_app(Config, "bench_public_mask")
def main(cfg) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
