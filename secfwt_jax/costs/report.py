"""Tables and plots of iteration cost records (secfwt_jax.costs.records): iteration.md,
iteration.json and the op-class bar plots, and the composed-vs-measured check table."""

from __future__ import annotations

import json
import os

import numpy as np

from .records import DEFINITIONS


def iteration_markdown(records: list[dict]) -> str:
    """One row per record (seconds, GB = 10^9 bytes, send actions of the busiest party,
    modelled seconds per network), then the units, how figures are made and the command."""
    from secfwt_jax.backend.common import protocol_label

    head = ("| method | protocol | unit | seq | layers | P | kind | wall s | GB total | "
            "GB per party | send actions (max party) | LAN s | WAN100 s | WAN200 s |")
    lines = [head, "|" + "---|" * 14]
    for r in records:
        n = r["networks"]
        lines.append(
            f"| {r['method']} | {protocol_label(r['protocol'], r.get('dealer'))} | {r['unit']} | "
            f"{r['seq_len']} | {r['layers']} | "
            f"{r['population']} | {r['kind']}{' (rounds counted)' * ('rounds' in r)} | "
            f"{r['wall_s']:.3g} | {r['bytes_total'] / 1e9:.4g} "
            f"| {' / '.join(f'{b / 1e9:.3g}' for b in r['bytes_sent'])} | "
            f"{max(r['send_actions'])} | {n['lan']['total_s']:.3g} | "
            f"{n['wan100']['total_s']:.3g} | {n['wan200']['total_s']:.3g} |")
    notes = ["", "Units: " + "; ".join(f"{m} / {u}: {d}" for (m, u), d in DEFINITIONS.items())
             + ".", "wall s, bytes and send actions are measured on this machine (kind "
             "measured) or composed from measured programs (kind composed: from 1- and 2-layer "
             "programs, from shorter sequences or from the two parts of an SFT step, as each "
             "record's `composition` says); "
             "network times are modelled (wall + max-party bytes / bandwidth + rounds x latency, "
             "with the rounds counted on the WAN relay where the kind says so, else the "
             "max-party send actions; docs/backend.md). GB = 10^9 bytes."]
    if records:
        notes.append(f"Command: `{records[0]['command']}`")
    return "\n".join(lines + notes) + "\n"


def composition_markdown(check: list[dict]) -> str:
    """Composed vs measured rows (records.composition_check, or records.seq_check, whose rows
    also say the sequence lengths fitted and the send-action ratio)."""
    seq = bool(check) and "from_seq" in check[0]
    lines = ["| protocol | method | unit | model | seq | layers | " + (
        "fitted from seq | " if seq else "") + "GB composed / measured | "
             "wall s composed / measured |" + (" send actions ratio |" if seq else ""),
             "|" + "---|" * (10 if seq else 8)]
    for c in check:
        lines.append(
            f"| {c['protocol']} | {c['method']} | {c['unit']} | {c['model']} | {c['seq_len']} | "
            f"{c['layers']} | " + (f"{c['from_seq']} | " if seq else "")
            + f"{c['bytes_composed'] / 1e9:.4g} / {c['bytes_measured'] / 1e9:.4g} "
            f"= {c['bytes_ratio']:.4f} | {c['wall_composed']:.4g} / {c['wall_measured']:.4g} = "
            f"{c['wall_ratio']:.3f} |" + (f" {c['send_actions_ratio']:.3f} |" if seq else ""))
    return "\n".join(lines) + "\n"


def plots(records: list[dict], path_prefix: str) -> list[str]:
    """Bar plots of time (party seconds) and bytes (GB) per method and protocol, stacked by op
    class: `<path_prefix>_bytes.png` and `<path_prefix>_time_s.png`; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = ("matmul", "exp", "reciprocal", "comparison", "trig", "other")
    keep = {}
    for r in records:  # per (method-unit, protocol): the composed record if any, else measured
        key = (f"{r['method']}\n{r['unit']}", r["protocol"])
        if key not in keep or r["kind"] == "composed" or r["layers"] > keep[key]["layers"]:
            keep[key] = r
    labels = [f"{m}\n{p}" for m, p in keep]
    paths = []
    for what, unit in (("bytes", 1e9), ("time_s", 1.0)):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4))
        bottom = np.zeros(len(keep))
        for c in classes:
            vals = np.array([r["by_op_class"].get(c, {}).get(what, 0) / unit
                             for r in keep.values()])
            ax.bar(labels, vals, bottom=bottom, label=c)
            bottom += vals
        ax.set_ylabel("GB sent (all parties)" if what == "bytes" else "party time s (mean)")
        ax.set_title(f"one iteration: {'bytes' if what == 'bytes' else 'time'} by op class")
        ax.legend(fontsize=7)
        plt.setp(ax.get_xticklabels(), fontsize=7)
        fig.tight_layout()
        path = f"{path_prefix}_{what}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_iteration(records: list[dict], directory: str) -> None:
    """iteration.json, iteration.md and the two plots of `records` in `directory`."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "iteration.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(directory, "iteration.md"), "w") as f:
        f.write(iteration_markdown(records))
    plots(records, os.path.join(directory, "iteration"))
