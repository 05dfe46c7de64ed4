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


VALIDATED = ("10ms_1gbps", "40ms_200mbps")  # the settings predicted; others only calibrate


def rows(records: list[dict]) -> list[dict]:
    """One row per (record, validated setting). Rounds for a setting are the relay's depth
    counted at the OTHER validated setting of the same run (never at the one predicted)."""
    from secfwt_jax.backend.network import NetworkSetting, estimate_time

    out = []
    for rec in records:
        med = rec["median_wall_s"]
        lan = med["lan"]
        shapes = [k for k in VALIDATED if k in rec["shapes"]]
        depth = {k: statistics.median(r["relay"]["depth"] for r in rec["runs"][k])
                 for k in rec["shapes"] if k != "relay0"}
        for name in shapes:
            shape = rec["shapes"][name]
            net = NetworkSetting(name, shape["bandwidth_bps"] or float("inf"),
                                 shape["latency_s"])
            measured = med[name]
            other = [k for k in shapes if k != name]
            counted = int(depth[other[0]]) if other else None
            by_actions = estimate_time(cost_stub(rec, lan), net)
            by_counted = estimate_time(cost_stub(rec, lan, counted), net) if other else None
            anchored = None
            if "1ms" in med and counted is not None:  # compute + host wake-ups from the 1 ms run
                anchored = (med["1ms"] + counted * (net.latency_s - 0.001)
                            + by_actions.transfer_s)
            row = dict(
                model=f"{rec['model']} ({rec['layers']} layer{'s' * (rec['layers'] != 1)}, "
                      f"hidden {rec['hidden']}, seq {rec['seq_len']}, batch {rec['batch']})"
                if rec["layers"] else rec["model"],
                protocol=rec["protocol"], setting=name, latency_s=shape["latency_s"],
                bandwidth_bps=shape["bandwidth_bps"], repeats=rec["repeats"],
                measured_s=measured, lan_s=lan, relay0_s=med.get("relay0"),
                ms1_s=med.get("1ms"), send_actions_max=max(rec["cost"]["send_actions"]),
                bytes_sent_max=max(rec["cost"]["bytes_sent"]),
                depth_counted_here=depth[name], rounds_counted_other=counted,
                transfer_s=by_actions.transfer_s,
                by_send_actions_s=by_actions.total_s,
                by_counted_rounds_s=None if by_counted is None else by_counted.total_s,
                anchored_1ms_s=anchored,
                command=rec["command"], date=rec.get("date"),
            )
            row["residual_ms_per_round"] = (
                None if by_counted is None or not counted
                else 1e3 * (measured - by_counted.total_s) / counted)
            for k in ("by_send_actions", "by_counted_rounds", "anchored_1ms"):
                v = row[f"{k}_s"]
                row[f"{k}_error"] = None if v is None else v / measured - 1
            out.append(row)
    return out


def _fmt(v, err) -> str:
    return "-" if v is None else f"{v:.2f} ({100 * err:+.0f}%)"


def markdown(table: list[dict], command: str) -> str:
    lines = [
        f"Made by `{command}` from the runs.json files (each record names its bench_wan.py "
        "command). Times are medians over the repeats; LAN (direct loopback links) and every "
        "relay setting were measured interleaved in the same run on one shared 2-core machine "
        "(other jobs running: load average 15-35). Modelled = network.estimate_time = LAN wall "
        "+ rounds x latency + 8 x max party bytes / bandwidth, with rounds = the relay's depth "
        "counted at the other setting (`counted`), or = max send actions (`send actions`, what "
        "a record without counted rounds gets). `anchored at 1 ms`: the same with the LAN wall "
        "replaced by the 1 ms relay run minus its rounds x 1 ms (it includes the host's wake-up "
        "delay per round, which loopback LAN runs hide). `unexplained ms per round`: (measured - "
        "modelled with counted rounds) / rounds.", "",
        "| model | protocol | setting | LAN s | measured s | modelled, counted rounds s (err) "
        "| modelled, send actions s (err) | anchored at 1 ms s (err) | rounds counted | "
        "max send actions | transfer s | unexplained ms per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    probes = [r for r in table if r["model"].startswith("kernel")]
    for r in table:
        if r in probes:
            continue
        lines.append(
            f"| {r['model']} | {r['protocol']} | {r['setting']} | {r['lan_s']:.2f} | "
            f"{r['measured_s']:.2f} | "
            f"{_fmt(r['by_counted_rounds_s'], r['by_counted_rounds_error'])} | "
            f"{_fmt(r['by_send_actions_s'], r['by_send_actions_error'])} | "
            f"{_fmt(r['anchored_1ms_s'], r['anchored_1ms_error'])} | "
            f"{r['rounds_counted_other'] or 0:,} | {r['send_actions_max']:,} | "
            f"{r['transfer_s']:.2f} | "
            + ("-" if r["residual_ms_per_round"] is None else f"{r['residual_ms_per_round']:.1f}")
            + " |")
    if probes:
        lines += [
            "", "Kernel probes (what a send action is; their latency terms are a fraction of a "
            "second, below this machine's noise, so their wall times validate nothing):", "",
            "| kernel | protocol | setting | LAN s | measured s | rounds counted here | "
            "max send actions |", "|---|---|---|---|---|---|---|"]
        for r in probes:
            lines.append(
                f"| {r['model'].removeprefix('kernel ')} | {r['protocol']} | {r['setting']} | "
                f"{r['lan_s']:.2f} | {r['measured_s']:.2f} | {r['depth_counted_here']:,.0f} | "
                f"{r['send_actions_max']:,} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", nargs="+", default=["results/wan/runs.json"])
    ap.add_argument("--out", default="results/wan")
    args = ap.parse_args(argv)
    command = "python " + shlex.join([os.path.relpath(__file__), *sys.argv[1:]])
    records = []
    for path in args.runs:
        with open(path) as fh:
            records += json.load(fh)
    table = rows(records)
    with open(os.path.join(args.out, "wan.json"), "w") as fh:
        json.dump(dict(command=command, rows=table), fh, indent=1)
    md = markdown(table, command)
    with open(os.path.join(args.out, "wan.md"), "w") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    main()
