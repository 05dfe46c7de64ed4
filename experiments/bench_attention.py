"""The attention ablation's former single entry point, kept so that the commands recorded in
results/attention/ (and older notes) still run: `python experiments/bench_attention.py SUB
[--key value ...]` runs the tool of SUB with the same arguments (legacy `--key value` forms
are translated by the tool, see experiments/common.py):

    cell    experiments/attention_cell.py     one (attention, protocol, seq_len) cell
    grid    experiments/attention_grid.py     every cell, each in a subprocess with a timeout
    trig    experiments/attention_trig.py     masked vs SPU's built-in cos/sin
    report  experiments/attention_report.py   tables, ratios and the plot from the records

New commands call the tools directly. This file imports no other script: it replaces its own
process with the tool's (os.execv).
"""

from __future__ import annotations

import os
import sys

TOOLS = {"cell": "attention_cell.py", "grid": "attention_grid.py", "trig": "attention_trig.py",
         "report": "attention_report.py"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
        got = repr(sys.argv[1]) if len(sys.argv) > 1 else "nothing"
        raise SystemExit(f"bench_attention.py: unknown sub-command {got}; accepted: "
                         f"{', '.join(TOOLS)} (or run experiments/attention_<sub>.py directly)")
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), TOOLS[sys.argv[1]])
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, tool, *sys.argv[2:]])


if __name__ == "__main__":
    main()
