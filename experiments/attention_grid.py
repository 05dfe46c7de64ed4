"""The attention ablation's grid: every (protocol, seq_len, attention) cell, each measured by
experiments/attention_cell.py in its own subprocess, one at a time, with a timeout and a
memory cap (the machine is shared). Cells already recorded are skipped (force=true reruns
them); a cell that does not finish gets a record with status "not_run" and the reason.

    python experiments/attention_grid.py 'protocols=[aby3,cheetah]' 'seq_lens=[64,128,256,512]'

Appends to `records` (default OUT/records.jsonl, OUT = results/attention); then
experiments/attention_report.py makes the tables and the plot.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import common

HERE = os.path.dirname(os.path.abspath(__file__))
CELL = os.path.join(HERE, "attention_cell.py")


@dataclasses.dataclass
class Config(common.AppConfig):
    """The grid (legacy form: --protocols aby3 cheetah --seq-lens 64 128 --force)."""

    protocols: list[str] = dataclasses.field(default_factory=lambda: ["aby3", "cheetah"])
    seq_lens: list[int] = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])
    attentions: list[str] = dataclasses.field(
        default_factory=lambda: list(common.ATTENTION_KERNELS))
    timeout: float = 1800.0  # per cell (s)
    force: bool = False  # rerun cells already recorded
    max_rss_gb: float = 12.0  # per cell (GiB)
    head_chunks: int = 1  # passed to every cell
    out: str = os.path.join("results", "attention")
    records: str | None = None  # default: OUT/records.jsonl
    field: str = "FM64"  # passed to every cell
    fraction_bits: int = 18  # passed to every cell
    seed: int = 0  # passed to every cell


def cell_key(r: dict) -> tuple:
    return r["attention"], r["protocol"], r["seq_len"]


def rss_gb(pid: int) -> float:
    """Resident memory of process `pid` in GiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def wait_cell(proc, timeout_s: float, max_rss_gb: float) -> str | None:
    """Wait for a cell process; kill its process group on timeout or when its resident memory
    passes max_rss_gb (the machine is shared). Returns why it did not finish, or None."""
    t0 = time.time()
    while True:
        try:
            rc = proc.wait(timeout=2.0)
            return None if rc == 0 else f"the cell process exited with code {rc}"
        except subprocess.TimeoutExpired:
            pass
        reason = None
        if time.time() - t0 > timeout_s:
            reason = f"timed out after {timeout_s:.0f} s on this 2-core shared machine"
        elif rss_gb(proc.pid) > max_rss_gb:
            reason = f"stopped at {max_rss_gb:g} GiB resident memory (machine: 23 GiB, shared)"
        if reason:
            os.killpg(proc.pid, signal.SIGKILL)  # the cell's own process group
            proc.wait()
            return reason


@common.hydra_app(Config, "attention_grid")
def main(args) -> None:
    """Run every cell in a subprocess, one at a time, each with a timeout."""
    records = os.path.abspath(args.records or os.path.join(args.out, "records.jsonl"))
    root = os.path.dirname(HERE)
    for protocol in args.protocols:
        for seq_len in args.seq_lens:
            for attention in args.attentions:
                done = common.latest_per_key(common.read_jsonl(records), cell_key).get(
                    (attention, protocol, seq_len))
                if done and done["status"] == "ok" and not args.force:
                    continue
                cell = [f"attention={attention}", f"protocol={protocol}", f"seq_len={seq_len}"]
                if args.head_chunks > 1:
                    cell.append(f"head_chunks={args.head_chunks}")
                print("running", " ".join(cell), flush=True)
                t0 = time.time()
                proc = subprocess.Popen(
                    [sys.executable, CELL, *cell, f"records={records}",
                     f"party_timeout={args.timeout}", f"field={args.field}",
                     f"fraction_bits={args.fraction_bits}", f"seed={args.seed}"],
                    cwd=root, start_new_session=True)
                reason = wait_cell(proc, args.timeout, args.max_rss_gb)
                if reason:
                    common.append_jsonl(records, {
                        "status": "not_run", "reason": reason, "attention": attention,
                        "protocol": protocol, "seq_len": seq_len, "elapsed_s": time.time() - t0,
                        "command": common.command_line([CELL, *cell]),
                        "unix_time": time.time(),
                    })
                    print("not run:", reason, flush=True)


if __name__ == "__main__":
    main()
