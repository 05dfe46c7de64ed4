"""Cost of running the parties as party servers (issue 12): the same secure forward with the
parties as local processes driven over pipes (mode=mp), and as party servers
(`python -m secfwt_jax.party`, started here as separate commands on loopback) driven over gRPC,
without and with TLS (TLS on both the gRPC control channel and SPU's links). Calls
interleaved, repeated.

    python experiments/bench_cluster.py [--repeats 5] [--out results/cluster]

Writes OUT/cluster.json and OUT/cluster.md. Bytes are SPU's link counters between the parties
(the control channel's bytes, the data owner's input shares and output shares, are reported
separately by the cost records as input/output share bytes); times are wall-clock per call as
the data owner sees them (CallCost.wall_s: sharing, the run, reconstructing).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import common
import numpy as np


@dataclasses.dataclass
class Config(common.AppConfig):
    """The benchmark's settings (legacy form: --protocol aby3 --repeats 5)."""

    protocol: str = "aby3"
    repeats: int = 5  # calls per kind of parties, interleaved
    batch: int = 4
    seq_len: int = 16
    out: str = "results/cluster"


@common.hydra_app(Config, "bench_cluster")
def main(args) -> None:
    from secfwt_jax.backend import PROTOCOL_PARTIES, make_backend
    from secfwt_jax.party import start_servers, stop_servers
    from secfwt_jax.party_cluster import write_local_cluster

    work = tempfile.mkdtemp(prefix="secfwt-cluster-")
    tls = common.make_certs(f"{work}/certs")
    n = PROTOCOL_PARTIES[args.protocol]
    clusters = {name: write_local_cluster(f"{work}/{name}.yaml", n, t, connect_timeout_s=60)
                for name, t in (("servers_tcp", None), ("servers_tls", tls))}
    b, s = args.batch, args.seq_len
    f, params, (embeds, mask, onehot, prompt) = common.tiny_forward(b, s)
    servers, backends = {}, {}
    try:
        for name, path in clusters.items():
            os.makedirs(f"{work}/{name}")
            servers[name] = start_servers(path, range(n), f"{work}/{name}")
        backends["local_pipes"] = make_backend(args.protocol, mode="mp", timeout_s=120)
        for name, path in clusters.items():
            backends[name] = make_backend(args.protocol, mode="mp", timeout_s=120, cluster=path)
        runs = common.interleaved_calls(
            backends, f, params, (embeds, mask, onehot, prompt), args.repeats,
            lambda cost: dict(wall_s=cost.wall_s, bytes_total=int(cost.bytes_total),
                              control_bytes=int(cost.input_share_bytes
                                                + cost.output_share_bytes)))
    finally:
        for be in backends.values():
            be.close()
        for srv in servers.values():
            stop_servers(srv)
    med = {k: float(np.median([r["wall_s"] for r in v])) for k, v in runs.items()}
    command = common.command_line()
    rec = dict(command=command, protocol=args.protocol,
               setting="one shared 2-core machine, loopback; local_pipes: mode=mp (the "
                       "parties are this process's children, pipes, plain TCP links); "
                       "servers_*: party servers started as separate commands, gRPC control "
                       "channel; _tls: TLS on the control channel and on SPU's links",
               model="tiny (random weights)", batch=b, seq_len=s, repeats=args.repeats,
               runs=runs, median_wall_s=med,
               servers_tcp_over_local=med["servers_tcp"] / med["local_pipes"],
               servers_tls_over_tcp=med["servers_tls"] / med["servers_tcp"],
               bytes_equal=len({r[0]["bytes_total"] for r in runs.values()}) == 1)
    md = [f"Command: `{command}`. {args.protocol}, tiny model, batch {b}, seq {s}; "
          f"{args.repeats} calls each, interleaved, on a shared 2-core machine (loopback).", "",
          *common.markdown_table(
              ["parties", "median wall s per call", "SPU link bytes per call",
               "control-channel share bytes per call"],
              [[k, f"{med[k]:.3f}", f"{rs[0]['bytes_total']:,}", f"{rs[0]['control_bytes']:,}"]
               for k, rs in runs.items()])]
    md += ["", f"Party servers (gRPC, no TLS) / local processes (pipes): "
           f"{rec['servers_tcp_over_local']:.2f}x; party servers with TLS / without: "
           f"{rec['servers_tls_over_tcp']:.2f}x. Link bytes equal: {rec['bytes_equal']}."]
    common.write_outputs(args.out, "cluster", rec, "\n".join(md) + "\n", cfg=args)
    print("\n".join(md))


if __name__ == "__main__":
    main()
