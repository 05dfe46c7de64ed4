"""Measured vs modelled WAN wall time, from experiments/bench_wan.py's runs.json.

    python experiments/wan_report.py [--runs results/wan/runs.json] [--out results/wan]

Writes OUT/wan.json and OUT/wan.md. For every (model, protocol, relay setting) it sets the
measured median wall time beside secfwt_jax.backend.network.estimate_time's prediction, whose
compute term is the median LAN (direct loopback) wall time of the same run and whose rounds come
from the record's send actions (the rule the library applies to every committed CallCost). For
comparison it also prints the prediction with the rounds the relay counted (Lamport depth) at
the OTHER latency setting of the same run, and the old rule (one latency per send action, no
factor). Nothing here is fitted to the wall times it is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cost_stub(rec: dict, wall_s: float, rounds: int | None = None):
    """A CallCost-shaped record for estimate_time: the run's bytes / send actions, LAN wall."""
    from secfwt_jax.backend.cost import CallCost

    c = rec["cost"]
    return CallCost(
        protocol=rec["protocol"], field="FM64", fraction_bits=18, mode="mp",
        n_parties=len(c["bytes_sent"]), wall_s=wall_s, exec_s=list(c["exec_s"]),
        bytes_sent=list(c["bytes_sent"]), bytes_recv=list(c["bytes_sent"]),
        send_actions=list(c["send_actions"]), recv_actions=list(c["recv_actions"]),
        by_op_class={}, ops={}, rounds=rounds,
    )


def rows(records: list[dict]) -> list[dict]:
    from secfwt_jax.backend.network import NetworkSetting, estimate_time

    out = []
    for rec in records:
        lan = rec["median_wall_s"]["lan"]
        shapes = {k: v for k, v in rec["shapes"].items() if v["latency_s"] > 0}
        depth = {k: statistics.median(r["relay"]["depth"] for r in rec["runs"][k])
                 for k in shapes}
        for name, shape in shapes.items():
            net = NetworkSetting(name, shape["bandwidth_bps"] or float("inf"),
                                 shape["latency_s"])
            measured = rec["median_wall_s"][name]
            model = estimate_time(cost_stub(rec, lan), net)
            others = [depth[k] for k in shapes if k != name]
            by_depth = (estimate_time(cost_stub(rec, lan, int(others[0])), net).total_s
                        if others else None)
            old = (lan + net.latency_s * max(rec["cost"]["send_actions"])
                   + model.transfer_s)
            out.append(dict(
                model=f"{rec['model']} ({rec['layers']} layer{'s' * (rec['layers'] > 1)}, "
                      f"hidden {rec['hidden']}, seq {rec['seq_len']}, batch {rec['batch']})",
                protocol=rec["protocol"], setting=name, latency_s=shape["latency_s"],
                bandwidth_bps=shape["bandwidth_bps"], repeats=rec["repeats"],
                measured_s=measured, lan_s=lan,
                relay0_s=rec["median_wall_s"].get("relay0"),
                send_actions_max=max(rec["cost"]["send_actions"]),
                depth_counted=depth[name], modelled_s=model.total_s,
                modelled_rounds=model.rounds, modelled_transfer_s=model.transfer_s,
                error=model.total_s / measured - 1,
                by_other_depth_s=by_depth,
                by_other_depth_error=None if by_depth is None else by_depth / measured - 1,
                old_rule_s=old, old_rule_error=old / measured - 1,
                command=rec["command"], date=rec.get("date"),
            ))
    return out


def markdown(table: list[dict], command: str) -> str:
    from secfwt_jax.backend.network import ROUNDS_RULE

    lines = [
        f"Made by `{command}` from runs.json (its records name the bench_wan.py command). "
        "Wall times are medians over the repeats; LAN and every relay setting were measured "
        "interleaved in the same run on one shared 2-core machine (other jobs running). "
        f"Modelled = network.estimate_time: LAN wall + rounds x latency + 8 x max party bytes "
        f"/ bandwidth, rounds = {ROUNDS_RULE}.", "",
        "| model | protocol | setting | LAN s | measured s | modelled s | error | rounds "
        "(model) | depth counted | max send actions | one latency per send (old) s | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['model']} | {r['protocol']} | {r['setting']} | {r['lan_s']:.2f} | "
            f"{r['measured_s']:.2f} | {r['modelled_s']:.2f} | {100 * r['error']:+.0f}% | "
            f"{r['modelled_rounds']:,} | {r['depth_counted']:,.0f} | "
            f"{r['send_actions_max']:,} | {r['old_rule_s']:.2f} | "
            f"{100 * r['old_rule_error']:+.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default="results/wan/runs.json")
    ap.add_argument("--out", default="results/wan")
    args = ap.parse_args(argv)
    command = "python " + shlex.join([os.path.relpath(__file__), *sys.argv[1:]])
    with open(args.runs) as fh:
        table = rows(json.load(fh))
    with open(os.path.join(args.out, "wan.json"), "w") as fh:
        json.dump(dict(command=command, rows=table), fh, indent=1)
    md = markdown(table, command)
    with open(os.path.join(args.out, "wan.md"), "w") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    main()
