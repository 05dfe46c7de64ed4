"""Our per-iteration costs (bench_iteration's iteration.json) next to the SecFwT paper's table.

    python experiments/compare_paper.py results/iteration/roberta-large_aby3/iteration.json \
        [more iteration.json ...] --out results/iteration/paper_comparison.md

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

import argparse
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from secfwt_jax.costs import composition_check, load_records  # noqa: E402
from secfwt_jax.costs.paper import paper_markdown, paper_rows  # noqa: E402
from secfwt_jax.costs.report import composition_markdown  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="iteration.json files from bench_iteration.py")
    ap.add_argument("--out", help="write the markdown table (and a .json next to it) here")
    ap.add_argument("--check-composition", action="store_true",
                    help="instead: composed (from 1 and 2 layers) vs measured deeper records")
    args = ap.parse_args(argv)
    records = load_records(args.paths)
    if args.check_composition:
        table = composition_check(records)
        text = composition_markdown(table)
    else:
        table = paper_rows(records)
        text = paper_markdown(table)
    text += "\nTable made by: `python " + shlex.join(
        [os.path.relpath(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])]) + "`\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
