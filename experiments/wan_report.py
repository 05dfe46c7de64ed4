"""Measured vs modelled WAN wall time, from experiments/bench_wan.py's runs.json files.

    python experiments/wan_report.py --runs results/wan/runs.json results/wan/v2/runs.json ...
    python experiments/wan_report.py 'runs=[results/wan/runs.json,results/wan/v2/runs.json]'

Writes OUT/wan.json and OUT/wan.md. For every model run and validated setting (10 ms / 1 Gbps,
40 ms / 200 Mbps) it sets the measured median wall time beside
secfwt_jax.backend.network.estimate_time's prediction, whose compute term is the median LAN
(direct loopback) wall time of the same run and whose rounds are the relay's depth counted at
the OTHER validated setting of the same run; beside it the prediction with max send actions as
rounds (what a record without counted rounds gets) and one anchored at the 1 ms relay run.
Kernel probes are listed apart (send actions against counted rounds), and runs that differ only
in the number of candidate prompts give the batching table. Nothing here is fitted to the wall
times it is compared with.
"""

from __future__ import annotations

import dataclasses
import json
import statistics

import common


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


def label(rec: dict) -> str:
    """The run's model, shape, number of candidates and method (secfwt unless said)."""
    if not rec["layers"]:
        return rec["model"]
    extra = [f"{rec['prompts']} prompts"] if rec.get("prompts", 1) > 1 else []
    extra += [rec["method"]] if rec.get("method", "secfwt") != "secfwt" else []
    extra += [f"{k}={rec[k]}" for k in ("attention", "activation", "rfa_trig") if rec.get(k)]
    return (f"{rec['model']} ({rec['layers']} layer{'s' * (rec['layers'] != 1)}, hidden "
            f"{rec['hidden']}, seq {rec['seq_len']}, batch {rec['batch']}"
            + "".join(", " + e for e in extra) + ")")


def rows(records: list[dict]) -> list[dict]:
    """One row per (record, validated setting). Rounds for a setting are the relay's depth
    counted at the OTHER validated setting of the same run (never at the one predicted); a run
    with one setting only uses its own count (rounds_from says which)."""
    from secfwt_jax.backend.network import NetworkSetting, estimate_time

    out = []
    for rec in records:
        med = rec["median_wall_s"]
        if "lan" not in med:  # a rounds-only run (bench_wan direct=false): nothing to validate
            continue
        lan = med["lan"]
        shapes = [k for k in VALIDATED if k in rec["shapes"]]
        depth = {k: statistics.median(r["relay"]["depth"] for r in rec["runs"][k])
                 for k in rec["shapes"] if k != "relay0"}
        for name in shapes:
            shape = rec["shapes"][name]
            net = NetworkSetting(name, shape["bandwidth_bps"] or float("inf"),
                                 shape["latency_s"])
            measured = med[name]
            other = [k for k in shapes if k != name] or [name]  # one setting: its own count
            counted = int(depth[other[0]])
            by_actions = estimate_time(cost_stub(rec, lan), net)
            by_counted = estimate_time(cost_stub(rec, lan, counted), net)
            anchored = None
            if "1ms" in med:  # compute + host wake-ups from the 1 ms run
                anchored = (med["1ms"] + counted * (net.latency_s - 0.001)
                            + by_actions.transfer_s)
            row = dict(
                model=label(rec),
                rounds_from="other setting" if other[0] != name else "same setting",
                protocol=rec["protocol"], setting=name, latency_s=shape["latency_s"],
                bandwidth_bps=shape["bandwidth_bps"], repeats=rec["repeats"],
                measured_s=measured, lan_s=lan, relay0_s=med.get("relay0"),
                measured_all_s=[r["wall_s"] for r in rec["runs"][name]],
                lan_all_s=[r["wall_s"] for r in rec["runs"]["lan"]],
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


def batching_rows(records: list[dict]) -> list[dict]:
    """Batched (prompts=P) vs P separate calls (prompts=1) of the same query, per setting:
    measured and modelled ratio of P x wall(one candidate) to wall(P candidates). Here the rounds
    are the relay's depth counted in the same run (a structural count, not a wall-time fit)."""
    from secfwt_jax.backend.network import NetworkSetting, estimate_time

    out = []
    key = ("model", "protocol", "method", "batch", "seq_len", "layers")
    for big in records:
        for one in records:
            if (big.get("prompts", 1) <= 1 or one.get("prompts", 1) != 1
                    or any(big.get(k) != one.get(k) for k in key)
                    or "lan" not in big["median_wall_s"] or "lan" not in one["median_wall_s"]):
                continue
            p = big["prompts"]
            for name, shape in big["shapes"].items():
                if name not in one["shapes"] or shape["latency_s"] < 0.005:
                    continue
                net = NetworkSetting(name, shape["bandwidth_bps"] or float("inf"),
                                     shape["latency_s"])
                row = dict(model=big["model"], protocol=big["protocol"], method=big["method"],
                           batch=big["batch"], prompts=p, setting=name)
                for tag, rec in (("batched", big), ("one", one)):
                    depth = statistics.median(r["relay"]["depth"] for r in rec["runs"][name])
                    lan = rec["median_wall_s"]["lan"]
                    row[f"{tag}_measured_s"] = rec["median_wall_s"][name]
                    row[f"{tag}_lan_s"] = lan
                    row[f"{tag}_rounds"] = depth
                    row[f"{tag}_send_actions"] = max(rec["cost"]["send_actions"])
                    row[f"{tag}_counted_s"] = estimate_time(
                        cost_stub(rec, lan, int(depth)), net).total_s
                    row[f"{tag}_actions_s"] = estimate_time(cost_stub(rec, lan), net).total_s
                for k in ("measured", "counted", "actions"):
                    row[f"saving_{k}"] = p * row[f"one_{k}_s"] / row[f"batched_{k}_s"]
                row["saving_lan"] = p * row["one_lan_s"] / row["batched_lan_s"]
                out.append(row)
    return out


def _calls(values) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _fmt(v, err) -> str:
    return "-" if v is None else f"{v:.2f} ({100 * err:+.0f}%)"


SHARED_MACHINE = "one shared 2-core machine (other jobs running: load average 15-65)"


def markdown(table: list[dict], command: str, batching: list[dict] = (),
             machine: str = SHARED_MACHINE) -> str:
    lines = [
        f"Made by `{command}` from the runs.json files (each record names its bench_wan.py "
        "command). Times are medians over the repeats; LAN (direct loopback links) and every "
        f"relay setting were measured interleaved in the same run on {machine}. Modelled = "
        "network.estimate_time = LAN wall "
        "+ rounds x latency + 8 x max party bytes / bandwidth, with rounds = the relay's depth "
        "counted at the other setting (`counted`), or = max send actions (`send actions`, what "
        "a record without counted rounds gets). `anchored at 1 ms`: the same with the LAN wall "
        "replaced by the 1 ms relay run minus its rounds x 1 ms (it includes the host's wake-up "
        "delay per round, which loopback LAN runs hide). `unexplained ms per round`: (measured - "
        "modelled with counted rounds) / rounds. `*`: a run with one latency setting, whose "
        "rounds were counted in the calls predicted (a count of hops, not a fit to their "
        "time).", "",
    ]
    probes = [r for r in table if r["model"].startswith("kernel")]
    lines += common.markdown_table(
        ["model", "protocol", "setting", "LAN s (calls)", "measured s (calls)",
         "modelled, counted rounds s (err)", "modelled, send actions s (err)",
         "anchored at 1 ms s (err)", "rounds counted", "max send actions", "transfer s",
         "unexplained ms per round"],
        [[r["model"], r["protocol"], r["setting"],
          f"{r['lan_s']:.2f} ({_calls(r['lan_all_s'])})",
          f"{r['measured_s']:.2f} ({_calls(r['measured_all_s'])})",
          _fmt(r["by_counted_rounds_s"], r["by_counted_rounds_error"]),
          _fmt(r["by_send_actions_s"], r["by_send_actions_error"]),
          _fmt(r["anchored_1ms_s"], r["anchored_1ms_error"]),
          f"{r['rounds_counted_other']:,}{'*' if r['rounds_from'] == 'same setting' else ''}",
          f"{r['send_actions_max']:,}", f"{r['transfer_s']:.2f}",
          "-" if r["residual_ms_per_round"] is None else f"{r['residual_ms_per_round']:.1f}"]
         for r in table if r not in probes])
    if probes:
        lines += [
            "", "Kernel probes (what a send action is; their latency terms are a fraction of a "
            "second, below this machine's noise, so their wall times validate nothing):", "",
            *common.markdown_table(
                ["kernel", "protocol", "setting", "LAN s", "measured s", "rounds counted here",
                 "max send actions"],
                [[r["model"].removeprefix("kernel "), r["protocol"], r["setting"],
                  f"{r['lan_s']:.2f}", f"{r['measured_s']:.2f}",
                  f"{r['depth_counted_here']:,.0f}", f"{r['send_actions_max']:,}"]
                 for r in probes])]
    if batching:
        lines += [
            "", "Batching on the relay: one call of P candidates against P calls of one "
            "(saving = P x wall(one) / wall(P)); rounds counted in the same run:", "",
            *common.markdown_table(
                ["model", "protocol", "method", "batch", "P", "setting", "rounds: P / one",
                 "send actions: P / one", "wall s: P / one", "saving measured",
                 "modelled, counted rounds", "modelled, send actions", "saving at LAN"],
                [[r["model"], r["protocol"], r["method"], r["batch"], r["prompts"],
                  r["setting"], f"{r['batched_rounds']:,.0f} / {r['one_rounds']:,.0f}",
                  f"{r['batched_send_actions']:,} / {r['one_send_actions']:,}",
                  f"{r['batched_measured_s']:.1f} / {r['one_measured_s']:.1f}",
                  f"{r['saving_measured']:.2f}x", f"{r['saving_counted']:.2f}x",
                  f"{r['saving_actions']:.2f}x", f"{r['saving_lan']:.2f}x"]
                 for r in batching])]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Config(common.AppConfig):
    """The report's inputs (legacy form: --runs a/runs.json b/runs.json --out results/wan)."""

    runs: list[str] = dataclasses.field(default_factory=lambda: ["results/wan/runs.json"])
    out: str = "results/wan"
    machine: str = SHARED_MACHINE  # how the runs' times were taken (said in the report)


@common.hydra_app(Config, "wan_report")
def main(args) -> None:
    command = common.command_line()
    records = []
    for path in args.runs:
        with open(path) as fh:
            records += json.load(fh)
    table = rows(records)
    batching = batching_rows(records)
    md = markdown(table, command, batching, args.machine)
    common.write_outputs(args.out, "wan", dict(command=command, machine=args.machine, rows=table,
                                               batching=batching), md)
    print(md)


if __name__ == "__main__":
    main()
