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

import argparse
import json
import os
import shlex
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from secfwt_jax.backend import make_backend  # noqa: E402
from secfwt_jax.backend.masked_trig import model_ops  # noqa: E402
from secfwt_jax.config import PRESETS, ModelConfig  # noqa: E402
from secfwt_jax.model import embed_fn, init_params, position_ids, verbalizer_fn  # noqa: E402
from secfwt_jax.tuning.public_mask import with_public_mask  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="roberta-base", choices=tuple(PRESETS))
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--seq", type=int, default=128, help="text tokens per example (padded)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=0)
    p.add_argument("--attention", default="softmax_puma", help="the project's fot_puma default")
    p.add_argument("--activation", default="gelu_puma")
    p.add_argument("--protocol", default="aby3")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("results", "public_mask"))
    return p.parse_args(argv)


def make_inputs(args, cfg, params):
    rng = np.random.default_rng(args.seed)
    b, s = args.batch, args.seq
    ids = rng.integers(3, cfg.vocab_size - 1, (b, s)).astype(np.int32)
    lengths = rng.integers(max(3, s // 2), s + 1, b)
    mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = cfg.bos_token_id
    ids[np.arange(b), lengths - 1] = cfg.eos_token_id
    ids[mask == 0] = cfg.pad_token_id
    mask_at = lengths // 2
    ids[np.arange(b), mask_at] = cfg.mask_token_id
    mask_onehot = np.zeros((b, s), np.float32)
    mask_onehot[np.arange(b), mask_at] = 1
    pos = position_ids(mask, cfg, args.prompt_len)
    embeds = np.asarray(jax.jit(embed_fn(cfg, args.prompt_len))(params, ids, pos))
    prompt = (0.1 * rng.standard_normal((args.prompts, args.prompt_len, cfg.hidden_size))
              ).astype(np.float32)
    return embeds, mask, mask_onehot, prompt


def run(args) -> dict:
    cfg = ModelConfig.preset(args.model, num_hidden_layers=args.layers, attention=args.attention,
                             activation=args.activation)
    params = init_params(cfg, seed=args.seed)
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
        command=shlex.join(["python", "experiments/bench_public_mask.py", *sys.argv[1:]]),
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
    os.makedirs(args.out, exist_ok=True)
    tag = f"public_mask_{args.model}_L{args.layers}_s{args.seq}_{args.protocol}"
    with open(os.path.join(args.out, tag + ".json"), "w") as fh:
        json.dump(rec, fh, indent=1)
    with open(os.path.join(args.out, tag + ".md"), "w") as fh:
        fh.write(markdown(rec))
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
        "| mask | bytes | send actions | wall s | compile s | max abs err vs plaintext |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rec["results"].items():
        lines.append(f"| {name} | {r['bytes_total']:,} | {r['send_actions_total']:,} | "
                     f"{r['wall_s']} | {r['compile_s']} | {r['max_abs_err_vs_plaintext']:.2e} |")
    lines += ["", f"Saving of the public mask: {sv['bytes']:,} bytes "
              f"({100 * sv['bytes_fraction']:.2f}% of the secret-mask call), "
              f"{sv['send_actions']:,} send actions."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run(parse_args())
