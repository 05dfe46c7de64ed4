"""Put the rounds counted on the WAN relay into bench_iteration records, so that their network
times charge counted rounds instead of the busiest party's send actions (docs/backend.md,
"Network model": under Cheetah send actions are not rounds).

    python experiments/attach_rounds.py \
        'records=[results/iteration/quiet/cheetah/fot_seq32/iteration.json]' \
        'runs=[results/wan/rounds/cheetah_fot/runs.json]' setting=10ms_1gbps

`runs` are runs.json files of experiments/bench_wan.py that ran the same programs through the
relay (`direct=false` where two sets of parties do not fit in memory): a measured record takes
the median relay depth at `setting` of the run with its protocol, model, layers, sequence,
batch and candidates whose parties sent the same send actions and bytes, all parties together
(bytes within 1e-4: Cheetah's vary by a few KB per call; the program's fingerprint); its
layer-composed record (1 and 2 layers -> N) then takes the rounds composed
the same way (secfwt_jax.costs.attach_rounds). Each records file is rewritten in place
(iteration.json, .md and plots); compose_seq.py run on them afterwards carries the rounds to the
longer sequence.
"""

from __future__ import annotations

import dataclasses
import os

import common
from omegaconf import DictConfig

from secfwt_jax.costs import attach_rounds, load_records
from secfwt_jax.costs.report import write_iteration


@dataclasses.dataclass
class Config(common.AppConfig):
    """`python experiments/attach_rounds.py records=[a.json] runs=[runs.json] setting=10ms_1gbps`"""

    records: list[str] = dataclasses.field(default_factory=list)  # iteration.json files
    runs: list[str] = dataclasses.field(default_factory=list)  # bench_wan runs.json files
    setting: str = "10ms_1gbps"  # the relay setting whose depth is taken (latency >= 10 ms)


def run(cfg: DictConfig) -> list[str]:
    if not cfg.records or not cfg.runs:
        raise ValueError("attach_rounds needs records=[iteration.json ...] and "
                         "runs=[runs.json ...]")
    runs = []
    for path in cfg.runs:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no relayed runs at {path} (run bench_wan.py)")
        runs += common.read_json(path, [])
    said = []
    for path in cfg.records:
        records = [{k: v for k, v in r.items() if k != "source"} for r in load_records([path])]
        lines = attach_rounds(records, runs, cfg.setting)
        if lines:
            write_iteration(records, os.path.dirname(path))
        said += [f"{path}: {x}" for x in lines] or [f"{path}: no record matches a relayed run"]
    print("\n".join(said))
    return said


@common.hydra_app(Config, "attach_rounds")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
