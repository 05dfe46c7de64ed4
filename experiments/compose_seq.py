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
bench_iteration (`sft_from_parts`), with the whole update read off its two largest measured
slices (`whole_update`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_iteration import (  # noqa: E402
    SFT_PARTS,
    combine,
    figures_of,
    keep_flat_rounds,
    networks,
    sft_from_parts,
    whole_update_record,
    write_outputs,
)
from compare_paper import composition_markdown, load_records  # noqa: E402

SEQ_FREE = ("sft_update",)  # parts whose cost does not depend on the sequence


def whole_update(records: list[dict]) -> list[dict]:
    """The records with sft_update's slices replaced by the whole update read off the line
    through the two LARGEST slices (bench_iteration.extrapolate_entries), the other slices
    checking that line. Why not bench_iteration's own record (the first two slices listed):
    under Cheetah the bytes per entry fall as the slices grow (8.3 KB between 1/1024 and 1/512
    of the parameters, 6.2 KB between 1/512 and 1/256), so the line through the larger slices
    is the closer one; both are upper estimates. A measured whole update is used as it is."""
    out = [r for r in records if r["method"] not in SEQ_FREE]
    for protocol in sorted({r["protocol"] for r in records if r["method"] in SEQ_FREE}):
        mine = [r for r in records if r["method"] in SEQ_FREE and r["protocol"] == protocol]
        whole = [r for r in mine if r["kind"] == "measured" and r["entries"] == r["entries_full"]]
        slices = sorted((r for r in mine if r["kind"] == "measured"
                         and r["entries"] < r["entries_full"]), key=lambda r: r["entries"])
        if whole:
            out.append(whole[-1])
            continue
        if len(slices) < 2:
            raise ValueError(f"{protocol} sft_update: need two measured slices or the whole "
                             f"update, got {len(slices)} slices")
        rec = whole_update_record(
            (slices[-2], slices[-1]), slices[:-2],
            "linear in the entries updated, through the two largest measured slices (send "
            "actions: the larger's where they do not grow)")
        out.append(dict(rec, source=slices[-1]["source"]))
    return out


def deepest(records: list[dict]) -> dict:
    """{(protocol, method, unit, seq_len): record with the most layers (composed first)}."""
    out = {}
    for r in records:
        key = (r["protocol"], r["method"], r["unit"], r["seq_len"])
        old = out.get(key)
        if old is None or (r["layers"], r["kind"] == "composed") > (
                old["layers"], old["kind"] == "composed"):
            out[key] = r
    return out


def fit(points: list[tuple[int, dict]], seq: int, degree: int) -> dict:
    """Every numeric figure through the (seq_len, figures) points, read at `seq`."""
    xs = np.array([float(s) for s, _ in points])
    if len(set(xs)) != degree + 1 or len(xs) != degree + 1:
        raise ValueError(f"degree {degree} needs {degree + 1} distinct sequence lengths, got "
                         f"{sorted(int(x) for x in xs)}")
    # Lagrange weights at `seq`: the value of the interpolating polynomial is sum w_i y_i
    w = [np.prod([(seq - xs[j]) / (xs[i] - xs[j]) for j in range(len(xs)) if j != i])
         for i in range(len(xs))]

    last = int(np.argmax(xs))
    below = int(np.argmax(np.where(xs < xs[last], xs, -np.inf))) if len(xs) > 1 else last

    def leaf(*vals):
        v = float(sum(wi * vi for wi, vi in zip(w, vals)))
        if seq > xs[last] and v < vals[last] and degree > 1:
            # a concave fit read beyond the points can fall below the longest measurement (or
            # under 0: Cheetah's HE matmul bytes, 21.75 / 22.78 / 23.61 GB at seq 8 / 16 / 32);
            # a longer sequence costs no less, so such a figure takes the line through the two
            # longest points
            t = (seq - xs[below]) / (xs[last] - xs[below])
            v = float(vals[below] + t * (vals[last] - vals[below]))
        return v

    return combine([figures_of(f) for _, f in points], leaf)


def fit_mixed(points: list[tuple[int, dict]], seq: int, degree: int, time_degree: int) -> dict:
    """Bytes (total, per party, per op class) by the degree-`degree` polynomial through all
    points; wall time and send actions (total, per party, per op class) by the degree-
    `time_degree` polynomial through the longest time_degree + 1 points, except send actions
    that the two longest points have within 5% (bench_iteration.keep_flat_rounds): those are the
    longest's."""
    by_bytes = fit(points, seq, degree)
    # send actions that do not grow with the sequence (ABY3) stay those of the longest
    by_time = keep_flat_rounds(points[-2][1], points[-1][1],
                               fit(points[-(time_degree + 1):], seq, time_degree))
    out = dict(by_time, bytes_total=by_bytes["bytes_total"], bytes_sent=by_bytes["bytes_sent"])
    out["by_op_class"] = {k: dict(v, bytes=by_bytes["by_op_class"][k]["bytes"])
                          for k, v in by_time["by_op_class"].items()}
    return out


def compose(records: list[dict], seq: int, degree: int, command: str,
            prompt_len: int | None = None, time_degree: int = 1) -> list[dict]:
    """The records at `seq`; prompt_len: what the records at `seq` state for the methods with a
    soft prompt (default: the longest point's, scaled to `seq`); time_degree: see fit_mixed."""
    if time_degree > degree:
        raise ValueError(f"time_degree {time_degree} is above degree {degree}")
    best = deepest(whole_update(records))
    groups = {}
    for (protocol, method, unit, s), r in best.items():
        groups.setdefault((protocol, method, unit), []).append((s, r))
    out = []
    for (protocol, method, unit), pts in sorted(groups.items()):
        pts.sort(key=lambda p: p[0])
        top = pts[-1][1]
        if method in SEQ_FREE:
            out.append(dict(top, seq_len=seq, note="does not depend on seq_len"))
            continue
        pts = [p for p in pts if p[0] != seq]
        if len(pts) != degree + 1:
            raise ValueError(
                f"{protocol} {method} {unit}: degree {degree} needs {degree + 1} sequence "
                f"lengths other than {seq}; the inputs have {[p[0] for p in pts]}")
        fig = fit_mixed([(s, r) for s, r in pts], seq, degree, time_degree)
        plen = 0 if top["prompt_len"] == 0 else (
            prompt_len if prompt_len is not None
            else round(top["prompt_len"] * seq / top["seq_len"]))
        rec = {k: v for k, v in top.items() if k not in fig and k not in (
            "networks", "source", "composed_from_layers", "composition")}
        rec.update(
            seq_len=seq, prompt_len=plen, kind="composed", **fig,
            composed_from_seq_lens=[s for s, _ in pts], time_degree=time_degree,
            composed_from_layers=top.get("composed_from_layers"),
            composition=f"bytes: polynomial of degree {degree} in seq_len through the records "
            f"at seq {[s for s, _ in pts]} (prompt_len {[r['prompt_len'] for _, r in pts]}); "
            f"wall time and send actions: degree {time_degree} through seq "
            f"{[s for s, _ in pts][-(time_degree + 1):]} (send actions within 5% at the two "
            "longest: the longest's); "
            f"each of those: {top.get('composition', 'measured')}",
            sources=[r["source"] for _, r in pts], command=command,
            layer_command=top["command"])
        rec["networks"] = networks(rec)
        out.append(rec)
    return out


def with_sft(records: list[dict]) -> list[dict]:
    """Append the SFT step composed from its parts where both are present."""
    out = list(records)
    for protocol in sorted({r["protocol"] for r in records}):
        parts = [r for r in records if r["protocol"] == protocol and r["method"] in SFT_PARTS]
        rec = sft_from_parts(parts, protocol, max(r["layers"] for r in parts)) if parts else None
        if rec is not None:
            grad = next(r for r in parts if r["method"] == "sft_grad")
            rec.update(composed_from_seq_lens=grad.get("composed_from_seq_lens"))
            out.append(rec)
    return out


def check(composed: list[dict], targets: list[dict]) -> list[dict]:
    """Composed vs measured (or layer-composed) at the same (protocol, method, unit, seq_len,
    layers): rows for compare_paper.composition_markdown."""
    rows = []
    for c in composed:
        for t in targets:
            same = all(c[k] == t[k] for k in ("protocol", "method", "unit", "seq_len", "layers"))
            if same and c["method"] not in SEQ_FREE:
                rows.append(dict(
                    protocol=c["protocol"], method=c["method"], unit=c["unit"], model=c["model"],
                    seq_len=c["seq_len"], layers=c["layers"], from_seq=c["composed_from_seq_lens"],
                    target_kind=t["kind"], bytes_composed=c["bytes_total"],
                    bytes_measured=t["bytes_total"],
                    bytes_ratio=c["bytes_total"] / t["bytes_total"], wall_composed=c["wall_s"],
                    wall_measured=t["wall_s"], wall_ratio=c["wall_s"] / t["wall_s"],
                    send_actions_ratio=max(c["send_actions"]) / max(t["send_actions"])))
    return rows


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
    composed = compose(records, args.seq, args.degree, command, args.prompt_len,
                       args.time_degree)
    composed = with_sft(composed)
    for r in composed:
        r["command"] = command
    write_outputs(composed, args.out)
    print(open(os.path.join(args.out, "iteration.md")).read())
    if args.check:
        rows = check(composed, load_records(args.check))
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
