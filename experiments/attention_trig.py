"""Masked cos/sin against SPU's built-in cos/sin on the same secret inputs, per protocol.

n angles uniform in [-64, 64] rad (the endpoints and 0 included); every implementation
computes cos and sin of every element: `builtin` (SPU's), `masked` (the one-round masked
protocol, radians converted to turns by a public x secret product) and `masked_turns` (the
angles handed over in turns, as rfa makes them). Costs are those of the median of `repeats`
warm calls (the first call compiles); the error is the largest over the calls.

    python experiments/attention_trig.py 'protocols=[aby3,cheetah]'

Writes OUT/trig.json (default results/attention), replacing the records of the protocols run.
See docs/masked_trig.md.
"""

from __future__ import annotations

import dataclasses
import json
import os

import common
import numpy as np

LAYER = common.ATTENTION_LAYER
TRIG_IMPLS = ("builtin", "masked", "masked_turns")


@dataclasses.dataclass
class Config(common.AppConfig):
    """The trig benchmark (legacy form: --protocols aby3 cheetah --n 196608)."""

    protocols: list[str] = dataclasses.field(default_factory=lambda: ["aby3", "cheetah"])
    # elements: the angles of one roberta-base sequence of 128 tokens (2 x 12 heads x 128 x 64)
    n: int = 2 * LAYER["heads"] * 128 * LAYER["num_features"]
    repeats: int = 3
    party_timeout: float = 3600.0
    out: str = os.path.join("results", "attention")
    field: str = "FM64"  # FM64 | FM128
    fraction_bits: int = 18
    seed: int = 0


def trig_inputs(n: int, seed: int = 0) -> np.ndarray:
    """n angles (rad) uniform in [-64, 64], with the endpoints and 0 included."""
    r = common.TRIG_RANGE_RAD
    x = np.random.default_rng(seed).uniform(-r, r, n)
    x[:3] = (-r, 0.0, r)
    return x.astype(np.float32)


def trig_builtin(x):
    """SPU's built-in cos and sin of a secret x (rad)."""
    import jax.numpy as jnp

    return jnp.cos(x), jnp.sin(x)


def trig_masked_fn(reveal, turns: bool):
    """cos and sin of a secret x with the masked one-round protocol: x in turns (as rfa makes
    it, the 1 / (2 pi) folded into its public projection), or in radians (converted by a
    public x secret product, whose rounded constant adds |x| 2^-(f+1) turns of error)."""
    from secfwt_jax.secure_trig import masked_cos_sin

    def trig_masked(x, masks):
        return masked_cos_sin(x if turns else x * (1 / (2 * np.pi)), masks, reveal)

    return trig_masked


def measure_trig(be, impl: str, x: np.ndarray, repeats: int) -> tuple[list, list]:
    """Costs and max abs errors of `repeats` warm calls of one trig implementation."""
    from secfwt_jax.backend.masked_trig import reveal_fn, trig_masks_for

    if impl == "builtin":
        f = trig_builtin
    else:
        f = trig_masked_fn(reveal_fn(be.name), turns=impl == "masked_turns")
    want = x.astype(np.float64)
    if impl == "masked_turns":  # the same angles, handed over in turns
        x = (want / (2 * np.pi)).astype(np.float32)
        want = 2 * np.pi * x.astype(np.float64)
    fn = be.compile(f)
    want_c, want_s = np.cos(want), np.sin(want)
    costs, errs = [], []
    for i in range(repeats + 1):  # the first call compiles
        extra = (trig_masks_for(be, x.shape),) if impl != "builtin" else ()  # os.urandom
        (c, s), cost = fn(x, *extra)
        if i:
            costs.append(cost)
            errs.append(float(max(np.abs(c - want_c).max(), np.abs(s - want_s).max())))
    return costs, errs


def trig_record(be, impl: str, x: np.ndarray, costs: list, errs: list, k: int) -> dict:
    """The record of one (protocol, implementation): the median call's costs, the max error."""
    from secfwt_jax.secure_trig import opened_value_distance_bound

    best = common.median_item(costs, key=lambda c: c.wall_s)
    r = common.TRIG_RANGE_RAD
    rec = {
        "impl": impl, "protocol": be.name, "n": int(x.size), "x_range_rad": [-r, r],
        "wall_s": best.wall_s, "wall_s_all": [c.wall_s for c in costs],
        "exec_s": list(best.exec_s), "bytes_total": best.bytes_total,
        "send_actions": best.send_actions_total, "input_share_bytes": best.input_share_bytes,
        "max_abs_err": max(errs),
        "by_op_class": {kk: vv.to_dict() for kk, vv in best.by_op_class.items()},
        "setting": common.attention_setting(be, {
            "outputs": "cos and sin of every element",
            "input": "turns" if impl == "masked_turns" else "radians",
            "mask_bits": k if impl != "builtin" else None}),
        "command": common.command_line([__file__, f"protocols=[{be.name}]", f"n={x.size}"]),
    }
    if impl != "builtin":
        rec["leakage_bound_per_element"] = opened_value_distance_bound(r / (2 * np.pi), k)
    return rec


@common.hydra_app(Config, "attention_trig")
def main(args) -> None:
    from secfwt_jax.backend import make_backend
    from secfwt_jax.config import check_choice
    from secfwt_jax.secure_trig import max_mask_bits

    for p in args.protocols:
        check_choice("protocol", p, common.ATTENTION_PROTOCOLS)
    x = trig_inputs(args.n, args.seed)
    k = max_mask_bits(64 if args.field == "FM64" else 128, args.fraction_bits)
    records = []
    for protocol in args.protocols:
        be = make_backend(protocol, mode="sim", field=args.field,
                          fraction_bits=args.fraction_bits, timeout_s=args.party_timeout)
        try:
            common.warm_up(be)
            for impl in TRIG_IMPLS:
                costs, errs = measure_trig(be, impl, x, args.repeats)
                records.append(trig_record(be, impl, x, costs, errs, k))
                print(json.dumps({kk: records[-1][kk] for kk in (
                    "impl", "protocol", "wall_s", "bytes_total", "send_actions",
                    "max_abs_err")}), flush=True)
        finally:
            be.close()
    path = os.path.join(args.out, "trig.json")
    old = [r for r in common.read_json(path, []) if r["protocol"] not in args.protocols]
    common.write_json(path, old + records)


if __name__ == "__main__":
    main()
