"""Overhead of TLS on the parties' links: the same secure forward in mp mode over plain TCP and
over TLS (experiments/make_certs.sh), calls interleaved, repeated.

    python experiments/bench_tls.py [--protocol aby3] [--repeats 5] [--out results/tls]

Writes OUT/tls.json and OUT/tls.md. Bytes are SPU's link counters (payload before TLS framing:
TLS's own record and handshake bytes are not in them); times are wall-clock per call.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def arguments(doc: str, out: str) -> argparse.ArgumentParser:
    """The benchmarks' options: protocol, repeats, batch, seq-len, out."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--protocol", default="aby3")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--out", default=out)
    return ap


def make_certs(out_dir: str) -> dict:
    """{"cert", "key", "ca"}: a one-certificate set from make_certs.sh in out_dir."""
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["bash", os.path.join(here, "make_certs.sh"), out_dir], check=True,
                   capture_output=True)
    return {"cert": f"{out_dir}/party.pem", "key": f"{out_dir}/party.key",
            "ca": f"{out_dir}/ca.pem"}


def tiny_forward(batch: int, seq_len: int):
    """(verbalizer function, params, (embeds, mask, onehot, prompt)): the benchmarks' call,
    the tiny model's 2 label-word logits for random inputs (seed 0)."""
    from secfwt_jax import ModelConfig, init_params
    from secfwt_jax.model import verbalizer_fn

    cfg = ModelConfig.preset("tiny", attention="softmax_puma", activation="gelu_puma")
    rng = np.random.default_rng(0)
    embeds = (0.5 * rng.standard_normal((batch, seq_len, cfg.hidden_size))).astype(np.float32)
    mask = np.ones((batch, seq_len), np.int32)
    onehot = np.zeros((batch, seq_len), np.float32)
    onehot[:, 1] = 1
    prompt = (0.1 * rng.standard_normal((1, 2, cfg.hidden_size))).astype(np.float32)
    return verbalizer_fn(cfg, [5, 6]), init_params(cfg, 0), (embeds, mask, onehot, prompt)


def main(argv=None) -> None:
    args = arguments(__doc__, "results/tls").parse_args(argv)

    from secfwt_jax.backend import make_backend

    tls = make_certs(tempfile.mkdtemp(prefix="secfwt-certs-"))
    b, s = args.batch, args.seq_len
    f, params, (embeds, mask, onehot, prompt) = tiny_forward(b, s)
    backends = {name: make_backend(args.protocol, mode="mp", timeout_s=120, tls=t)
                for name, t in (("tcp", None), ("tls", tls))}
    fns = {}
    try:
        for name, be in backends.items():
            fns[name] = (be.compile(f), be.put(params))
            fns[name][0](fns[name][1], embeds, mask, onehot, prompt)  # compile, warm up
        runs = {name: [] for name in backends}
        for _ in range(args.repeats):  # interleaved: the machine's load hits both alike
            for name, (fn, h) in fns.items():
                _, cost = fn(h, embeds, mask, onehot, prompt)
                runs[name].append(dict(wall_s=cost.wall_s, bytes_total=int(cost.bytes_total)))
    finally:
        for be in backends.values():
            be.close()
    med = {k: float(np.median([r["wall_s"] for r in v])) for k, v in runs.items()}
    command = "python " + shlex.join([os.path.relpath(__file__), *sys.argv[1:]])
    rec = dict(command=command, protocol=args.protocol, mode="mp (one process per party, "
               "loopback, one shared 2-core machine)", model="tiny (random weights)",
               batch=b, seq_len=s, repeats=args.repeats, runs=runs, median_wall_s=med,
               tls_over_tcp_wall=med["tls"] / med["tcp"],
               bytes_equal=runs["tls"][0]["bytes_total"] == runs["tcp"][0]["bytes_total"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tls.json"), "w") as fh:
        json.dump(rec, fh, indent=1)
    md = [f"Command: `{command}`. {args.protocol}, mp mode on loopback, tiny model, batch {b}, "
          f"seq {s}; {args.repeats} calls each, interleaved, on a shared 2-core machine.", "",
          "| links | median wall s per call | bytes per call (SPU payload) |", "|---|---|---|"]
    for k in runs:
        md.append(f"| {k} | {med[k]:.3f} | {runs[k][0]['bytes_total']:,} |")
    md += ["", f"TLS / TCP wall time: {rec['tls_over_tcp_wall']:.2f}x."]
    with open(os.path.join(args.out, "tls.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
