"""Overhead of TLS on the parties' links: the same secure forward in mp mode over plain TCP and
over TLS (experiments/make_certs.sh), calls interleaved, repeated.

    python experiments/bench_tls.py [--protocol aby3] [--repeats 5] [--out results/tls]

Writes OUT/tls.json and OUT/tls.md. Bytes are SPU's link counters (payload before TLS framing:
TLS's own record and handshake bytes are not in them); times are wall-clock per call.
"""

from __future__ import annotations

import dataclasses
import tempfile

import common
import numpy as np


@dataclasses.dataclass
class Config(common.AppConfig):
    """The benchmark's settings (legacy form: --protocol aby3 --repeats 5)."""

    protocol: str = "aby3"
    repeats: int = 5  # calls per link kind, interleaved
    batch: int = 4
    seq_len: int = 16
    out: str = "results/tls"


@common.hydra_app(Config, "bench_tls")
def main(args) -> None:
    from secfwt_jax.backend import make_backend

    tls = common.make_certs(tempfile.mkdtemp(prefix="secfwt-certs-"))
    b, s = args.batch, args.seq_len
    f, params, (embeds, mask, onehot, prompt) = common.tiny_forward(b, s)
    backends = {name: make_backend(args.protocol, mode="mp", timeout_s=120, tls=t)
                for name, t in (("tcp", None), ("tls", tls))}
    try:
        runs = common.interleaved_calls(
            backends, f, params, (embeds, mask, onehot, prompt), args.repeats,
            lambda cost: dict(wall_s=cost.wall_s, bytes_total=int(cost.bytes_total)))
    finally:
        for be in backends.values():
            be.close()
    med = {k: float(np.median([r["wall_s"] for r in v])) for k, v in runs.items()}
    command = common.command_line()
    rec = dict(command=command, protocol=args.protocol, mode="mp (one process per party, "
               "loopback, one shared 2-core machine)", model="tiny (random weights)",
               batch=b, seq_len=s, repeats=args.repeats, runs=runs, median_wall_s=med,
               tls_over_tcp_wall=med["tls"] / med["tcp"],
               bytes_equal=runs["tls"][0]["bytes_total"] == runs["tcp"][0]["bytes_total"])
    md = [f"Command: `{command}`. {args.protocol}, mp mode on loopback, tiny model, batch {b}, "
          f"seq {s}; {args.repeats} calls each, interleaved, on a shared 2-core machine.", "",
          *common.markdown_table(
              ["links", "median wall s per call", "bytes per call (SPU payload)"],
              [[k, f"{med[k]:.3f}", f"{runs[k][0]['bytes_total']:,}"] for k in runs]),
          "", f"TLS / TCP wall time: {rec['tls_over_tcp_wall']:.2f}x."]
    common.write_outputs(args.out, "tls", rec, "\n".join(md) + "\n", cfg=args)
    print("\n".join(md))


if __name__ == "__main__":
    main()
