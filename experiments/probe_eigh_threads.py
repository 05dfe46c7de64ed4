"""Our CMA-ES's eigendecomposition (jnp.linalg.eigh, float32, LAPACK syevd on CPU) with the BLAS
library's default threads vs one thread, each in a fresh process, alternating, on a machine that
may be shared with other jobs (the load average is recorded).

    python experiments/probe_eigh_threads.py
Writes results/optimizer/eigh_threads.json and .md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import common

CHILD = r"""
import json, time, numpy as np, jax, jax.numpy as jnp
n = int(__import__("sys").argv[1])
a = np.random.default_rng(0).standard_normal((n, 3 * n))
c = jnp.asarray((a @ a.T / n).astype(np.float32))
e = jax.jit(jnp.linalg.eigh)
jax.block_until_ready(e(c))
ts = []
for _ in range(10):
    t = time.perf_counter(); jax.block_until_ready(e(c)); ts.append(time.perf_counter() - t)
print(json.dumps(ts))
"""


@dataclasses.dataclass
class Config(common.AppConfig):
    dims: list[int] = dataclasses.field(default_factory=lambda: [500, 1000])
    rounds: int = 3  # processes per (d, threads), alternating
    out: str = "results/optimizer"  # OUT/eigh_threads.json and .md


@common.hydra_app(Config, "probe_eigh_threads")
def main(cfg) -> None:
    import numpy as np

    dims, rounds = list(cfg.dims), cfg.rounds

    rows = []
    load0 = os.getloadavg()
    for n in dims:
        for r in range(rounds):
            for threads in ("default", "1"):
                env = dict(os.environ)
                if threads == "1":
                    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
                ts = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env,
                                               capture_output=True, text=True,
                                               check=True).stdout)
                rows.append(dict(dim=n, round=r, blas_threads=threads,
                                 median_ms=round(1e3 * float(np.median(ts)), 2),
                                 max_ms=round(1e3 * max(ts), 2)))
                print(json.dumps(rows[-1]), flush=True)
    rec = dict(command=common.command_line(),
               note="10 calls per process after one warm-up; a machine shared with other jobs",
               cpu_count=os.cpu_count(), loadavg_start=load0, loadavg_end=os.getloadavg(),
               rows=rows)
    lines = ["# float32 eigh, BLAS default threads vs 1", "", f"Command: `{rec['command']}`  ",
             f"{rec['note']}; {rec['cpu_count']} cores; load average at start "
             f"{[round(x, 2) for x in load0]}, at end {[round(x, 2) for x in rec['loadavg_end']]}",
             ""]
    table = []
    for n in dims:
        for threads in ("default", "1"):
            sel = [x for x in rows if x["dim"] == n and x["blas_threads"] == threads]
            table.append([n, threads, ", ".join(str(x["median_ms"]) for x in sel),
                          max(x["max_ms"] for x in sel)])
    lines += common.markdown_table(["d", "BLAS threads", "medians of the rounds (ms)",
                                    "max of any call (ms)"], table)
    common.write_outputs(cfg.out, "eigh_threads", rec, "\n".join(lines) + "\n", cfg=cfg)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
