"""Hydra callback: after a multirun (`-m protocol=aby3,cheetah`), one table of all runs."""

from __future__ import annotations

import glob
import json
import os

from hydra.experimental.callback import Callback

COLUMNS = ("protocol", "optimizer", "method", "task", "model", "queries", "final_loss",
           "train_acc", "dev_metric", "test_metric", "bytes_total", "wall_s")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def summary_table(sweep_dir: str) -> str:
    """Markdown table of every summary.json below `sweep_dir`, with the time on each network
    model and the byte ratio against the first run."""
    rows = []
    for path in sorted(glob.glob(os.path.join(sweep_dir, "*", "summary.json"))):
        with open(path) as f:
            rows.append(json.load(f))
    if not rows:
        return f"no summary.json under {sweep_dir}"
    head = [*COLUMNS, "lan_s (modelled)", "wan100_s (modelled)", "bytes vs first"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = rows[0]["bytes_total"] or None
    for r in rows:
        est = r.get("network_estimates", {})
        ratio = f"{r['bytes_total'] / first:.3g}x" if first else "-"
        cells = [_fmt(r.get(c)) for c in COLUMNS] + [
            _fmt(est.get("lan", {}).get("total_s")), _fmt(est.get("wan100", {}).get("total_s")),
            ratio,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Command: `{rows[0].get('command', '')}`")
    return "\n".join(lines)


class SummaryTable(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = config.hydra.sweep.dir
        table = summary_table(sweep_dir)
        with open(os.path.join(sweep_dir, "summary.md"), "w") as f:
            f.write(table + "\n")
        print(table)
