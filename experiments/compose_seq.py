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
        [--methods fot_secfwt] [--check measured_at_target.json]

Records used: per (protocol, method, unit), the one with the most layers at each seq_len (the
layer-composed record when there is one). The output records say kind "composed", the sequence
lengths and files they came from. If the inputs hold the two parts of an SFT step (sft_grad,
sft_update; sft_update does not depend on seq_len), the SFT step is composed from them as in
bench_iteration (secfwt_jax.costs.sft_from_parts), with the whole update read off its two largest
measured slices (secfwt_jax.costs.whole_update). The fits are secfwt_jax.costs.compose.fit_seq
and fit_seq_mixed; this script is their command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from secfwt_jax.costs import compose_seq, load_records, seq_check, with_sft  # noqa: E402
from secfwt_jax.costs.report import composition_markdown, write_iteration  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", nargs="+", help="iteration.json files (several seq_len values)")
    ap.add_argument("--seq", type=int, required=True, help="the sequence length to compose")
    ap.add_argument("--degree", type=int, choices=(1, 2), required=True,
                    help="of the polynomial in seq_len for bytes, through degree + 1 lengths")
    ap.add_argument("--time-degree", type=int, choices=(1, 2), default=1,
                    help="of the polynomial for wall time and send actions, through the longest "
                    "time-degree + 1 lengths (default 1)")
    ap.add_argument("--prompt-len", type=int, default=None,
                    help="soft-prompt tokens the records at --seq state (prompted methods; "
                    "default: the longest record's, scaled)")
    ap.add_argument("--out", required=True, help="directory for iteration.json/.md and plots")
    ap.add_argument("--methods", nargs="*", default=None,
                    help="only these methods of the records (default: all)")
    ap.add_argument("--check", nargs="*", default=[],
                    help="iteration.json files with records at --seq to compare against")
    args = ap.parse_args(argv)
    here = os.path.relpath(os.path.abspath(__file__))
    command = "python " + shlex.join([here, *(sys.argv[1:] if argv is None else argv)])
    records = load_records(args.records)
    if args.methods:
        known = sorted({r["method"] for r in records})
        bad = [m for m in args.methods if m not in known]
        if bad:
            raise ValueError(f"methods {bad} are not in the records; they have {known}")
        records = [r for r in records if r["method"] in args.methods]
    composed = compose_seq(records, args.seq, args.degree, command, args.prompt_len,
                           args.time_degree)
    composed = with_sft(composed)
    for r in composed:
        r["command"] = command
    write_iteration(composed, args.out)
    print(open(os.path.join(args.out, "iteration.md")).read())
    if args.check:
        rows = seq_check(composed, load_records(args.check))
        if not rows:
            raise ValueError(f"no record in {args.check} matches a composed one at seq {args.seq}")
        with open(os.path.join(args.out, "seq_check.json"), "w") as f:
            json.dump(rows, f, indent=1)
        text = composition_markdown(rows) + f"\nCommand: `{command}`\n"
        with open(os.path.join(args.out, "seq_check.md"), "w") as f:
            f.write(text)
        print(text)


if __name__ == "__main__":
    main()
