"""Figures of a secure program as plain numbers, and the algebra on them.

A *figures* dict is the JSON-able measured part of a cost record (experiments/bench_iteration.py
writes one per record; composed records hold the same keys):

    wall_s              seconds (measured wall time of the call, or composed from such)
    bytes_total         bytes sent by all parties together (int)
    bytes_sent          [bytes] per party rank
    send_actions        [messages handed to the link] per party rank
    send_actions_total  int, their sum
    by_op_class         {class: {time_s: s (mean over parties), bytes: int, send_actions: int}}
                        (classes: secfwt_jax.backend.cost.OP_CLASSES)
    party_order         how the per-party lists are ordered (cost.CallCost.party_order)
    rounds              optional: sequential rounds counted on a run whose links passed the WAN
                        relay (cost.CallCost.rounds; experiments/attach_rounds.py); absent:
                        not counted, and the network model takes the busiest party's send
                        actions (secfwt_jax.backend.network.rounds_of)

Every composition in secfwt_jax.costs is one walk, `combine`, over same-shaped figures:
`add` (two programs run one after the other), `lin` (a point on the line through two), and the
polynomial fits of secfwt_jax.costs.compose. Network times of figures are
secfwt_jax.backend.network.estimate_time's, never a formula of their own (`networks`).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence

FIGURES = ("wall_s", "bytes_total", "bytes_sent", "send_actions", "send_actions_total",
           "by_op_class", "party_order")
OPTIONAL = ("rounds",)  # figures a record may lack (a composition keeps them only if all have them)
NETS = ("lan", "wan100", "wan200")  # the networks every record is modelled on
NETWORK_KEYS = ("total_s", "transfer_s", "latency_s", "compute_s")  # seconds, per network


def cost_figures(cost) -> dict:
    """The figures (module docstring) of a measured secfwt_jax.backend.cost.CallCost."""
    return dict(
        wall_s=float(cost.wall_s), bytes_total=int(cost.bytes_total),
        bytes_sent=[int(b) for b in cost.bytes_sent],
        send_actions=[int(a) for a in cost.send_actions],
        send_actions_total=int(cost.send_actions_total),
        by_op_class={k: dict(time_s=float(v.time_s), bytes=int(v.bytes),
                             send_actions=int(v.send_actions))
                     for k, v in cost.by_op_class.items()},
        party_order=cost.party_order,
        **({} if getattr(cost, "rounds", None) is None else {"rounds": int(cost.rounds)}),
    )


def figures_of(record: dict) -> dict:
    """The figures of a record (measured or composed), without its setting and networks; the
    OPTIONAL ones where the record has them (not None)."""
    missing = [k for k in FIGURES if k not in record]
    if missing:
        raise KeyError(f"record has no figures {missing}; a record needs {list(FIGURES)}")
    return {k: record[k] for k in FIGURES + OPTIONAL if record.get(k) is not None}


def combine(figs: Sequence[dict], leaf: Callable[..., float]) -> dict:
    """leaf(values of one figure across `figs`) for every numeric figure of same-shaped figure
    dicts (nested dicts and lists walked; ints rounded; strings kept from the first). An
    OPTIONAL figure that not all of `figs` have is dropped (rounds counted for one program but
    not for another: the composition's are not known)."""
    figs = [{k: v for k, v in f.items()
             if k not in OPTIONAL or all(k in g for g in figs)} for f in figs]

    def go(*vals):
        a = vals[0]
        if isinstance(a, dict):
            keys = [sorted(v) for v in vals]
            if any(k != keys[0] for k in keys):
                raise ValueError(f"figures differ in their keys: {keys}")
            return {k: go(*(v[k] for v in vals)) for k in a}
        if isinstance(a, list):
            if len({len(v) for v in vals}) != 1:
                raise ValueError(f"figures differ in their party counts: {[len(v) for v in vals]}")
            return [go(*items) for items in zip(*vals)]
        if isinstance(a, str):
            return a
        v = leaf(*vals)
        return int(round(v)) if isinstance(a, int) else float(v)

    return go(*figs)


def lin(f1: dict, f2: dict, t: float) -> dict:
    """f1 + t (f2 - f1) for every figure (ints rounded; strings kept): t = 0 gives f1, t = 1
    gives f2, other t the point on the line through them."""
    return combine([f1, f2], lambda a, b: a + t * (b - a))


def add(*figs: dict) -> dict:
    """The figures of programs run one after the other: every figure summed (per party and per
    op class). The counterpart of secfwt_jax.backend.cost.sum_costs for figures, which may be
    composed rather than measured; `party_order` is the first's."""
    if not figs:
        raise ValueError("add needs at least one figures dict")
    return combine(list(figs), lambda *v: sum(v))


def networks(fig: dict, names: Sequence[str] = NETS) -> dict:
    """{network: {total_s, transfer_s, latency_s, compute_s}} in seconds: the modelled time of
    `fig` on each named network, by secfwt_jax.backend.network.estimate_time (the figures are
    handed to it as a CallCost-like object: wall_s, bytes_sent, send_actions, ...)."""
    from secfwt_jax.backend.network import estimate_time

    view = types.SimpleNamespace(**figures_of(fig))
    out = {}
    for name in names:
        est = estimate_time(view, name).to_dict()
        out[name] = {k: est[k] for k in NETWORK_KEYS}
    return out
