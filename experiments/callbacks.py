"""Hydra callback: after a multirun (`-m protocol=aby3,cheetah`), one table of all runs that
finished and a list of the failed ones with their errors (run.py writes a failed job's
error.json and goes on with the next job); the sweep then exits non-zero if any failed."""

from __future__ import annotations

import glob
import json
import os
import sys

import common
from hydra.experimental.callback import Callback

COLUMNS = ("protocol", "optimizer", "method", "task", "model", "queries", "final_loss",
           "train_acc", "dev_metric", "test_metric", "bytes_total", "wall_s")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def failed_jobs(sweep_dir: str) -> list[tuple[str, dict]]:
    """(job folder name, error.json contents) of every failed job below `sweep_dir`."""
    out = []
    for path in sorted(glob.glob(os.path.join(sweep_dir, "*", "error.json"))):
        with open(path) as f:
            out.append((os.path.basename(os.path.dirname(path)), json.load(f)))
    return out


def failed_lines(sweep_dir: str) -> list[str]:
    failed = failed_jobs(sweep_dir)
    if not failed:
        return []
    lines = ["", f"Failed jobs ({len(failed)}):"]
    for name, err in failed:
        lines.append(f"- {name} ({' '.join(err.get('overrides', []))}): {err.get('error')}")
    return lines


def summary_table(sweep_dir: str) -> str:
    """Markdown table of every summary.json below `sweep_dir` that holds a whole run (one
    with "error" is listed as failed), with the time on each network model and the byte ratio
    against the first run; then the failed jobs with their errors."""
    rows = []
    for path in sorted(glob.glob(os.path.join(sweep_dir, "*", "summary.json"))):
        with open(path) as f:
            row = json.load(f)
        if "error" not in row:
            rows.append(row)
    if not rows:
        return "\n".join([f"no finished run (summary.json) under {sweep_dir}",
                          *failed_lines(sweep_dir)])
    head = [*COLUMNS, "lan_s (modelled)", "wan100_s (modelled)", "bytes vs first"]
    first = rows[0]["bytes_total"] or None
    cells = []
    for r in rows:
        est = r.get("network_estimates", {})
        ratio = f"{r['bytes_total'] / first:.3g}x" if first else "-"
        cells.append([_fmt(r.get(c)) for c in COLUMNS] + [
            _fmt(est.get("lan", {}).get("total_s")), _fmt(est.get("wan100", {}).get("total_s")),
            ratio,
        ])
    lines = common.markdown_table(head, cells)
    lines.append("")
    lines.append(f"Command: `{rows[0].get('command', '')}`")
    return "\n".join(lines + failed_lines(sweep_dir))


class SummaryTable(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = config.hydra.sweep.dir
        table = summary_table(sweep_dir)
        common.write_text(os.path.join(sweep_dir, "summary.md"), table + "\n")
        print(table, flush=True)
        failed = failed_jobs(sweep_dir)
        if failed:
            # SystemExit, not an exception: Hydra turns a callback's exception into a warning
            # and exits 0
            print(f"{len(failed)} multirun job(s) failed: {', '.join(n for n, _ in failed)} "
                  f"(errors above and in {sweep_dir}/*/error.json)", file=sys.stderr)
            raise SystemExit(1)
