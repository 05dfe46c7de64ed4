"""One secure forward of the verbalizer logits, per protocol and layer variant.

For every protocol in `protocols` and every variant (attention x activation x rfa_trig) this runs
the function the tuning loop runs each generation, verbalizer_fn(params, embeds, mask,
mask_onehot, prompt) -> (P, B, C) label-word logits, once under SPU and once in plaintext
(jax.jit), and records the measured cost (wall time, bytes and send actions per party, op
classes), the modelled time on the standard networks, and the max abs error against
plaintext. Weights are random (init_params) unless model=local model.path=DIR gives a
checkpoint; the record says which. Writes forward.json and forward.md in the run directory.

A secure output further from plaintext than `max_abs_err_limit` (fixed-point values that left
their range and wrapped around, e.g. RFA's exp(|k|^2/2) without normalize_qk) is no result:
its record carries `wrong` with the reason, forward.md marks it WRONG, a warning is printed and
the run exits 1 after writing the records.

    python experiments/bench_forward.py                                  # tiny model, 3 protocols
    python experiments/bench_forward.py model=roberta-base layers=1 seq_len=128 \
        protocols=[aby3,semi2k,cheetah] attention=[softmax,rfa]
    python experiments/bench_forward.py model=roberta-base seq_len=128 protocols=[aby3] \
        attention=softmax mode=mp timeout_s=3600

seq_len counts every token the encoder sees (soft prompt included); the examples' embeddings
are computed in plaintext from random token ids and shared per call, like the prompts.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from typing import Any

import common
import numpy as np
from omegaconf import DictConfig, ListConfig


@dataclasses.dataclass
class Config(common.AppConfig):
    """`python experiments/bench_forward.py model=<preset> [layers=N seq_len=..
    attention=[softmax,rfa] protocols=[aby3,semi2k,cheetah] mode=sim|mp]`: forward.json,
    forward.md and config.yaml in the run directory (hydra.run.dir)."""

    defaults: list[Any] = dataclasses.field(
        default_factory=common.hydra_defaults({"model": "tiny"}))
    hydra: Any = dataclasses.field(default_factory=common.hydra_settings(
        "outputs/bench_forward/${now:%Y-%m-%d_%H-%M-%S}"))
    # model group (tiny | roberta-base | roberta-large | local model.path=DIR)
    model: common.ModelGroup = dataclasses.field(default_factory=common.ModelGroup)
    layers: int | None = None  # override the number of encoder layers (presets only)
    seq_len: int = 16  # tokens the encoder sees per sequence, soft prompt included
    batch: int = 1  # B examples
    prompts: int = 1  # P candidate prompts (one call runs P x B sequences)
    prompt_len: int = 0  # L soft-prompt tokens (cat mode), part of seq_len
    attention: Any = dataclasses.field(default_factory=lambda: ["softmax", "rfa"])  # name or list
    activation: Any = None  # a name or a list; null: the model's (gelu)
    # builtin (SPU's cos/sin) and/or masked (one-round masked cos/sin)
    rfa_trig: Any = dataclasses.field(default_factory=lambda: ["builtin"])
    num_features: int = 64  # RFA random features
    # l2-normalised q/k: RFA's exp(|k|^2/2) <= e^0.5, inside FM64's range for any input
    # (docs/masked_trig.md). false: the random tiny model's keys overflow FM64 and the secure
    # logits are wrong (caught by max_abs_err_limit)
    normalize_qk: bool = True
    # a secure output further than this from plaintext (same variant) is marked wrong in the
    # record and the run exits 1 (fixed-point error alone is <= 2e-3 in results/forward)
    max_abs_err_limit: float = 0.05
    num_labels: int = 2  # C label words (random vocabulary ids)
    protocols: list[str] = dataclasses.field(default_factory=lambda: ["aby3", "semi2k", "cheetah"])
    # semi2k's Beaver triples: required with semi2k; only trusted_first_party exists (insecure
    # against party 0; docs/backend.md "Dealer")
    dealer: str | None = None
    mode: str = "sim"  # sim (parties as threads) | mp (one process per party, brpc loopback)
    field: str = "FM64"
    fraction_bits: int | None = None  # null: SPU's default for the field (18 for FM64)
    timeout_s: float = 600  # a party silent this long fails the run (large models: raise it)
    seed: int = 0


def as_list(value) -> list:
    if value is None:
        return [None]
    if isinstance(value, ListConfig | list | tuple):
        return list(value)
    return [value]


def variants(cfg: DictConfig) -> list[dict]:
    """(attention, activation, rfa_trig) combinations; rfa_trig varies for rfa only."""
    out = []
    for att, act in itertools.product(as_list(cfg.attention), as_list(cfg.activation)):
        for trig in as_list(cfg.rfa_trig) if att == "rfa" else ["builtin"]:
            v = dict(attention=att, activation=act, rfa_trig=trig)
            if v not in out:
                out.append(v)
    return out


def same_tree(a, b) -> bool:
    import jax

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def run(cfg: DictConfig, on_record=None) -> list[dict]:
    """All records; `on_record(records)` after each one (so a crash keeps what was measured)."""
    import jax

    from secfwt_jax.backend import PROTOCOLS, check_dealer, make_backend, protocol_capabilities
    from secfwt_jax.backend.common import DEALER_PROTOCOLS

    # the protocols whose backend runs an MPC program (plaintext does not: nothing to measure)
    mpc = [p for p in PROTOCOLS if protocol_capabilities(p).mpc_program]
    bad = [p for p in cfg.protocols if p not in mpc]
    if bad:
        raise ValueError(f"unknown protocols {bad}; accepted: {', '.join(mpc)}")
    if not bool(cfg.normalize_qk) and any(v["attention"] == "rfa" for v in variants(cfg)):
        print("WARNING: attention=rfa with normalize_qk=false: exp(|k|^2/2) is bounded only by "
              "the inputs and may leave the fixed-point range (docs/masked_trig.md); each secure "
              f"output is checked against plaintext (max_abs_err_limit {cfg.max_abs_err_limit})",
              file=sys.stderr, flush=True)
    dealers = {p: check_dealer(p, cfg.get("dealer") if p in DEALER_PROTOCOLS else None)
               for p in cfg.protocols}  # before any work
    prepared = []
    for variant in variants(cfg):
        config, params, weights = common.variant_model(cfg, variant)
        words, inputs = common.query_inputs(cfg, config, params)
        prepared.append((variant, config, params, weights, words, inputs))
    records, refs = [], {}
    for protocol in cfg.protocols:
        with make_backend(
            protocol, mode=cfg.mode, field=cfg.field, fraction_bits=cfg.fraction_bits,
            timeout_s=float(cfg.timeout_s), dealer=dealers[protocol],
        ) as be:
            put_params, handle, put_s = None, None, None
            for i, (variant, config, params, weights, words, inputs) in enumerate(prepared):
                if handle is None or not same_tree(params, put_params):
                    t = time.perf_counter()
                    handle, put_params = be.put(params, owner="model"), params
                    put_s = time.perf_counter() - t
                secure, extra, plain, plain_extra = common.query_functions(config, words, be, cfg)
                if i not in refs:
                    refs[i] = np.asarray(jax.jit(plain)(params, *inputs, *plain_extra))
                fn = be.compile(secure)
                t = time.perf_counter()
                fn.precompile(handle, *inputs, *extra)
                compile_s = time.perf_counter() - t
                out, cost = fn(handle, *inputs, *extra)
                records.append(record(cfg, protocol, variant, config, weights, be, cost, out,
                                      refs[i], compile_s, put_s))
                print(summary_line(records[-1]), flush=True)
                if on_record is not None:
                    on_record(records)
    return records


def record(cfg, protocol, variant, config, weights, be, cost, out, ref, compile_s, put_s) -> dict:
    d = cost.to_dict()
    measured = d["measured"]
    measured["max_abs_err"] = float(np.abs(out - ref).max())
    limit = float(cfg.max_abs_err_limit)
    measured["plaintext_max_abs_logit"] = float(np.abs(ref).max())
    measured["compile_s"] = compile_s
    measured["put_weights_s"] = put_s
    setting = dict(
        d["setting"], model=cfg.model.name, model_path=cfg.model.path, weights=weights,
        layers=config.num_hidden_layers, hidden=config.hidden_size,
        heads=config.num_attention_heads, intermediate=config.intermediate_size,
        vocab=config.vocab_size, attention=config.attention, activation=config.activation,
        rfa_trig=config.rfa_trig, num_features=config.num_features,
        normalize_qk=config.normalize_qk, seq_len=int(cfg.seq_len),
        text_len=int(cfg.seq_len) - int(cfg.prompt_len), batch=int(cfg.batch),
        prompts=int(cfg.prompts), prompt_len=int(cfg.prompt_len),
        sequences=int(cfg.prompts) * int(cfg.batch), num_labels=int(cfg.num_labels),
        output_shape=list(out.shape),
    )
    rec = dict(protocol=protocol, variant=variant, setting=setting, command=common.command_line(),
               measured=measured, modelled=d["modelled"], max_abs_err_limit=limit)
    if not measured["max_abs_err"] <= limit:  # NaN counts as wrong too
        rec["wrong"] = (
            f"secure output differs from plaintext by {measured['max_abs_err']:.3g} > "
            f"max_abs_err_limit {limit}: a fixed-point value left its range (for rfa: "
            "normalize_qk=true keeps exp(|k|^2/2) in range, docs/masked_trig.md)"
        )
    return rec


def summary_line(r: dict) -> str:
    m = r["measured"]
    return (
        f"{r['protocol']:8s} {r['variant']['attention']:8s} {r['variant']['rfa_trig']:8s} "
        f"wall {m['wall_s']:.2f} s  bytes/party {m['bytes_sent']}  "
        f"actions/party {m['send_actions']}  max_abs_err {m['max_abs_err']:.2e}"
        + (f"  WRONG: {r['wrong']}" if "wrong" in r else "")
    )


def markdown(records: list[dict]) -> str:
    from secfwt_jax.backend.common import protocol_label

    mb = 1e6
    rows = []
    for r in records:
        m, n, s = r["measured"], r["modelled"]["networks"], r["setting"]
        rows.append([
            protocol_label(r["protocol"], s.get("dealer")), s["attention"], s["activation"],
            s["rfa_trig"], f"{m['wall_s']:.3g}",
            " / ".join(f"{b / mb:.3g}" for b in m["bytes_sent"]), f"{m['bytes_total'] / mb:.4g}",
            " / ".join(map(str, m["send_actions"])), f"{n['lan']['total_s']:.3g}",
            f"{n['wan100']['total_s']:.3g}", f"{n['wan200']['total_s']:.3g}",
            f"{m['max_abs_err']:.2e}" + (" WRONG" if "wrong" in r else ""),
        ])
    lines = common.markdown_table(
        ["protocol", "attention", "activation", "rfa trig", "wall s", "MB sent per party",
         "MB total", "send actions per party", "LAN s", "WAN100 s", "WAN200 s", "max abs err"],
        rows)
    s = records[0]["setting"] if records else {}
    notes = [
        "",
        f"Model {s.get('model')} ({s.get('layers')} layers, hidden {s.get('hidden')}), "
        f"seq_len {s.get('seq_len')}, batch {s.get('batch')}, prompts {s.get('prompts')}, "
        f"field {s.get('field')}, fraction bits {s.get('fraction_bits')}, mode {s.get('mode')}; "
        f"weights: {s.get('weights')}.",
        "wall s, bytes, send actions and max abs err are measured (MB = 10^6 bytes); the "
        "network times are modelled: wall + max-party bytes / bandwidth + max-party send "
        "actions x latency (docs/backend.md).",
    ]
    wrong = [r for r in records if "wrong" in r]
    if wrong:
        notes.append(
            f"WRONG rows ({len(wrong)}) are not results: the secure output differs from "
            f"plaintext by more than max_abs_err_limit {wrong[0]['max_abs_err_limit']}."
        )
    if records:
        notes.append(f"Command: `{records[0]['command']}`")
    return "\n".join(lines + notes) + "\n"


@common.hydra_app(Config, "bench_forward")
def main(cfg: DictConfig) -> None:
    run_dir = common.run_dir()
    common.write_config(run_dir, cfg)

    def write(records):
        common.write_outputs(run_dir, "forward", records, markdown(records))

    records = run(cfg, on_record=write)
    write(records)
    print(f"run directory: {run_dir}")
    wrong = [r for r in records if "wrong" in r]
    if wrong:
        for r in wrong:
            print(f"WRONG {r['protocol']} {r['variant']}: {r['wrong']}", file=sys.stderr)
        raise SystemExit(f"{len(wrong)} of {len(records)} secure outputs are wrong (recorded in "
                         f"{run_dir}/forward.json as 'wrong')")


if __name__ == "__main__":
    main()
