"""Composition of figures (secfwt_jax.costs.figures) that were not measured directly.

Three rules, each checked against measurements in results/iteration/README.md:

- layers: cost(N) = cost(1) + (N - 1) (cost(2) - cost(1)) from programs with 1 and 2 encoder
  layers (`compose_layers`); cost(2) - cost(1) is one encoder layer, the rest is the embedding
  layer norm, head and loss.
- entries: an element-wise program (the Adam update of SFT) measured on slices of its
  parameters is read at the whole on the line through two slices, in the number of entries
  (`extrapolate_entries`).
- sequence: every figure as a polynomial in seq_len through degree + 1 records, read at a longer
  sequence (`fit_seq`); bytes (deterministic) by the polynomial, wall time and send actions
  (noisy) by a line through the two longest (`fit_seq_mixed`).

Send actions that do not grow between two measurements (ABY3 / SEMI2K send one message per
kernel and leaf whatever the size) are kept, not extrapolated (`keep_flat_rounds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .figures import combine, figures_of, lin

FLAT_ROUNDS = 0.05  # send-action counts of two measurements this close (relative) do not grow


def compose_layers(f1: dict, f2: dict, n: int) -> dict:
    """The figures of an n-layer program from those of its 1- and 2-layer versions:
    cost(n) = cost(1) + (n - 1) (cost(2) - cost(1)), every figure (per party, per op class)."""
    if n < 1:
        raise ValueError(f"a program has at least 1 encoder layer, got n={n}")
    return lin(f1, f2, n - 1)


def keep_flat_rounds(f1: dict, f2: dict, fig: dict) -> dict:
    """`fig` (extrapolated from f1 and f2) with the send-action counts that do not grow from
    f1 to f2 by more than FLAT_ROUNDS replaced by f2's: ABY3 / SEMI2K send one message per
    kernel and leaf whatever the size (the counts differ by noise of +-1%), and a line through
    two noisy near-equal counts, read far out, would be noise (or negative: Cheetah's
    truncation class went from 13726 to 12894 between slices). Counts that grow (Cheetah's OT
    batches) keep their extrapolated value. Counted rounds (`rounds`, where `fig` has them)
    follow the same rule. Changes and returns `fig`."""

    def flat(c1, c2):  # does not grow (counts that shrink, by noise, are not read out either)
        return c2 - c1 <= FLAT_ROUNDS * max(c2, 1)

    # judged on the all-party total: in sim mode SPU's log splits ABY3's counts between
    # parties 1 and 2 unevenly (README), so a single party's count is noisier than the total
    if flat(f1["send_actions_total"], f2["send_actions_total"]):
        fig["send_actions"] = list(f2["send_actions"])
        fig["send_actions_total"] = f2["send_actions_total"]
    if "rounds" in fig and flat(f1["rounds"], f2["rounds"]):  # counted rounds, the same rule
        fig["rounds"] = f2["rounds"]
    for k, v in fig["by_op_class"].items():
        c1, c2 = f1["by_op_class"][k]["send_actions"], f2["by_op_class"][k]["send_actions"]
        if flat(c1, c2):
            v["send_actions"] = c2
    return fig


def extrapolate_entries(f1: dict, f2: dict, n1: int, n2: int, total: int) -> dict:
    """The figures of an element-wise program on `total` entries from its figures on n1 < n2
    entries. Bytes and time: the line through the two. Send actions: the line too where they
    grow with the entries (Cheetah: 1.7x for 2x, its OT batches), else f2's
    (`keep_flat_rounds`)."""
    if n1 == n2:
        raise ValueError(f"two different slice sizes are needed, got {n1} entries twice")
    return keep_flat_rounds(f1, f2, lin(f1, f2, (total - n1) / (n2 - n1)))


def fit_seq(points: Sequence[tuple[int, dict]], seq: int, degree: int) -> dict:
    """Every figure of the (seq_len, record or figures) points as the polynomial of `degree` in
    seq_len through them (exactly degree + 1 distinct lengths; no least squares), read at
    `seq`. A concave fit read beyond the points that falls below the longest point takes the
    line through the two longest instead (a longer sequence costs no less)."""
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
            # e.g. Cheetah's HE matmul bytes, 21.75 / 22.78 / 23.61 GB at seq 8 / 16 / 32: the
            # quadratic through them turns down (under 0) at seq 128
            t = (seq - xs[below]) / (xs[last] - xs[below])
            v = float(vals[below] + t * (vals[last] - vals[below]))
        return v

    return combine([figures_of(f) for _, f in points], leaf)


def fit_seq_mixed(points: Sequence[tuple[int, dict]], seq: int, degree: int,
                  time_degree: int = 1) -> dict:
    """Bytes (total, per party, per op class) by the degree-`degree` polynomial through all
    points (sorted by seq_len); wall time and send actions (total, per party, per op class) by
    the degree-`time_degree` polynomial through the longest time_degree + 1 points, except send
    actions that the two longest points have within FLAT_ROUNDS (`keep_flat_rounds`): those are
    the longest's. time_degree 0: the times are not composed but NaN (for points whose times
    were taken under loads too different to be set on one line); send actions as for 1."""
    if not 0 <= time_degree <= degree:
        raise ValueError(f"time_degree {time_degree} is not in 0..degree ({degree})")
    by_bytes = fit_seq(points, seq, degree)
    by_time = keep_flat_rounds(points[-2][1], points[-1][1],
                               fit_seq(points[-(max(time_degree, 1) + 1):], seq,
                                       max(time_degree, 1)))
    if time_degree == 0:  # times not composed (points timed under different loads): NaN
        by_time["wall_s"] = math.nan
        for v in by_time["by_op_class"].values():
            v["time_s"] = math.nan
    out = dict(by_time, bytes_total=by_bytes["bytes_total"], bytes_sent=by_bytes["bytes_sent"])
    out["by_op_class"] = {k: dict(v, bytes=by_bytes["by_op_class"][k]["bytes"])
                          for k, v in by_time["by_op_class"].items()}
    return out
