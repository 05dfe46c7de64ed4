"""Compose a per-iteration cost at a sequence length from measurements at shorter ones.

Under Cheetah a roberta-large program at seq 128 does not fit this machine (one encoder layer's
forward was killed at 24 GB), so its figures are composed from bench_iteration records at
shorter sequences: every figure (wall time, bytes per party, send actions, per op class) is fitted
as a polynomial in seq_len through the records, and read at the target length:

    degree 1: cost(S) = a + b S             (RFA: nothing in a layer grows faster than S)
    degree 2: cost(S) = a + b S + c S^2     (softmax attention: the S x S scores)

with exactly degree + 1 sequence lengths (no least squares: the fit goes through the points).
That is for bytes, which are deterministic: under ABY3 at roberta-large shapes the quadratic
through seq 8, 16, 32 (or 16, 32, 64) gives the SFT backward's bytes at 128 to 4 digits. Wall
time and send actions are noisy (and ABY3's rounds hardly depend on S), and a quadratic through
them amplifies the noise (the same check with `--time-degree 2`: 1.7x and -4.6x the measured
time), so they take the line (`--time-degree 1`, the default) through the two longest lengths;
send actions that do not grow from the second-longest to the longest (within 5%: ABY3, SEMI2K)
stay the longest's. A figure whose quadratic turns down beyond the points (Cheetah's HE matmul
bytes) takes the line through the two longest too.
`--check` compares the composition with records measured (or layer-composed) at the target
length, e.g. a fit through seq 16 and 32 against seq 64 under Cheetah, or through 32 and 64 against
the ABY3 measurement at 128.

    python experiments/compose_seq.py results/iteration/cheetah/fot_seq32/iteration.json \
        results/iteration/cheetah/fot_seq64/iteration.json --seq 128 --degree 1 \
        --prompt-len 50 --out results/iteration/roberta-large_cheetah_fot \
        [--methods fot_secfwt] [--units query] [--check measured_at_target.json]
    python experiments/compose_seq.py 'records=[a.json,b.json]' seq=128 degree=1 out=DIR

(A Hydra app: the argparse form above, as recorded in results/, still works: bare paths are
`records`, `--key value` is `key=value`.)

Records used: per (protocol, method, unit), the one with the most layers at each seq_len (the
layer-composed record when there is one). The output records say kind "composed", the sequence
lengths and files they came from. If the inputs hold the two parts of an SFT step (sft_grad,
sft_update; sft_update does not depend on seq_len), the SFT step is composed from them as in
bench_iteration (secfwt_jax.costs.sft_from_parts), with the whole update read off its two largest
measured slices (secfwt_jax.costs.whole_update). Without sft_update records, an SFT step
measured as one program (method sft) at one length and its sft_grad part at the same length
give the update as their difference (secfwt_jax.costs.records.update_from_step). The fits are
secfwt_jax.costs.compose.fit_seq and fit_seq_mixed; this script is their command line.
"""

from __future__ import annotations

import dataclasses
import os

import common
from omegaconf import DictConfig

from secfwt_jax.costs import compose_seq, load_records, seq_check, with_sft
from secfwt_jax.costs.report import composition_markdown, write_iteration


@dataclasses.dataclass
class Config(common.AppConfig):
    """`python experiments/compose_seq.py records=[a.json,b.json] seq=128 degree=1 out=DIR`
    (legacy form: `compose_seq.py a.json b.json --seq 128 --degree 1 --out DIR`)."""

    records: list[str] = dataclasses.field(default_factory=list)  # iteration.json files
    seq: int | None = None  # the sequence length to compose (required)
    # of the polynomial in seq_len for bytes, through degree + 1 lengths: 1 or 2 (required)
    degree: int | None = None
    # of the polynomial for wall time and send actions, through the longest time_degree + 1;
    # 0: times not composed (NaN: points timed under different loads), send actions as for 1
    time_degree: int = 1
    # soft-prompt tokens the records at `seq` state (prompted methods; null: the longest
    # record's, scaled)
    prompt_len: int | None = None
    out: str | None = None  # directory for iteration.json/.md and plots (required)
    methods: list[str] | None = None  # only these methods of the records (null: all)
    units: list[str] | None = None  # only these units (query, generation, ...; null: all)
    check: list[str] = dataclasses.field(default_factory=list)  # records at `seq` to check


def run(cfg: DictConfig) -> None:
    """Compose, write iteration.json/.md and plots to cfg.out, and the check if asked."""
    command = common.command_line()  # as typed (legacy or positional form)
    missing = [k for k in ("seq", "degree", "out") if cfg[k] is None] + (
        [] if cfg.records else ["records"])
    if missing:
        raise ValueError(f"compose_seq needs {missing}: e.g. records=[a.json,b.json] seq=128 "
                         "degree=1 out=DIR")
    if cfg.degree not in (1, 2):
        raise ValueError(f"degree must be 1 or 2, got {cfg.degree}")
    if cfg.time_degree not in (0, 1, 2):
        raise ValueError(f"time_degree must be 0 (times not composed), 1 or 2, got "
                         f"{cfg.time_degree}")
    records = load_records(cfg.records)
    if cfg.methods:
        known = sorted({r["method"] for r in records})
        bad = [m for m in cfg.methods if m not in known]
        if bad:
            raise ValueError(f"methods {bad} are not in the records; they have {known}")
        records = [r for r in records if r["method"] in cfg.methods]
    if cfg.units:
        records = [r for r in records if r["unit"] in cfg.units]
    composed = compose_seq(records, int(cfg.seq), int(cfg.degree), command, cfg.prompt_len,
                           int(cfg.time_degree))
    composed = with_sft(composed)
    for r in composed:
        r["command"] = command
    write_iteration(composed, cfg.out)
    print(open(os.path.join(cfg.out, "iteration.md")).read())
    if cfg.check:
        rows = seq_check(composed, load_records(cfg.check))
        if not rows:
            raise ValueError(f"no record in {list(cfg.check)} matches a composed one at seq "
                             f"{cfg.seq}")
        common.write_json(os.path.join(cfg.out, "seq_check.json"), rows)
        text = composition_markdown(rows) + f"\nCommand: `{command}`\n"
        common.write_text(os.path.join(cfg.out, "seq_check.md"), text)
        print(text)


@common.hydra_app(Config, "compose_seq", positional="records")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
