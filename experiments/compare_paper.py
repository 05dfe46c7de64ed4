"""Our per-iteration costs (bench_iteration's iteration.json) next to the SecFwT paper's table.

    python experiments/compare_paper.py results/iteration/roberta-large_aby3/iteration.json \
        [more iteration.json ...] --out results/iteration/paper_comparison.md
    python experiments/compare_paper.py 'records=[a.json,b.json]' out=table.md \
        [check_composition=true]

(A Hydra app: the argparse form, as recorded in results/, still works.) The table is
secfwt_jax.costs.paper's; the composition check secfwt_jax.costs.composition_check.

The paper's figures (LAN, RoBERTa-large, one iteration; from a secondary source quoted in
issue 5) compare one optimizer step of SFT and of gradient prompt tuning with one forward query
of the forward-only methods. Ours are matched unit for unit: SFT / prompt tuning "iteration",
forward-only "query" (one candidate prompt on one batch); the "generation" unit (all lambda
candidates in one call, what one CMA-ES step costs) is shown too. For every (protocol, method)
the composed record is used when there is one, else the measured record with the most layers.
Time is the modelled LAN time (measured wall + max-party bytes / 3 Gbps + max-party send
actions x 0.8 ms; docs/backend.md) and, separately, the measured wall time.
"""

from __future__ import annotations

import dataclasses
import os

import common
from omegaconf import DictConfig

from secfwt_jax.costs import composition_check, load_records
from secfwt_jax.costs.paper import paper_markdown, paper_rows
from secfwt_jax.costs.report import composition_markdown


@dataclasses.dataclass
class Config(common.AppConfig):
    """`python experiments/compare_paper.py records=[a.json,b.json] out=FILE.md`
    (legacy form: `compare_paper.py a.json b.json --out FILE.md`)."""

    records: list[str] = dataclasses.field(default_factory=list)  # iteration.json files
    out: str | None = None  # write the markdown table here (and a .json next to it)
    # instead: composed (from 1 and 2 layers) vs measured deeper records
    check_composition: bool = False


def run(cfg: DictConfig) -> None:
    """The table (or the composition check) printed, and written to cfg.out (.md and .json)."""
    command = common.command_line()  # as typed (legacy or positional form)
    if not cfg.records:
        raise ValueError("compare_paper needs records=[iteration.json, ...]")
    records = load_records(cfg.records)
    if cfg.check_composition:
        table = composition_check(records)
        text = composition_markdown(table)
    else:
        table = paper_rows(records)
        text = paper_markdown(table)
    text += f"\nTable made by: `{command}`\n"
    print(text)
    if cfg.out:
        common.write_text(cfg.out, text)
        common.write_json(os.path.splitext(cfg.out)[0] + ".json", table)


@common.hydra_app(Config, "compare_paper", positional="records")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
