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

import itertools
import json
import os
import shlex
import sys
import time

import hydra
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])


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


def model_for(cfg: DictConfig, variant: dict):
    """(ModelConfig, params, weights description) for the model group and a variant."""
    from secfwt_jax import ModelConfig, init_params, load_pretrained

    over = dict(
        attention=variant["attention"], rfa_trig=variant["rfa_trig"],
        num_features=int(cfg.num_features), normalize_qk=bool(cfg.normalize_qk),
    )
    if variant["activation"]:
        over["activation"] = variant["activation"]
    layers = cfg.layers if cfg.layers is not None else cfg.model.layers
    if cfg.model.path:
        if layers:
            raise ValueError("layers applies to presets only, not to a checkpoint")
        model, params = load_pretrained(cfg.model.path, **over)
        return model.config, params, f"checkpoint {cfg.model.path}"
    if layers:
        over["num_hidden_layers"] = int(layers)
    if cfg.model.max_position_embeddings:
        over["max_position_embeddings"] = int(cfg.model.max_position_embeddings)
    over["initializer_range"] = float(cfg.model.initializer_range)
    config = ModelConfig.from_name(cfg.model.name, **over)
    weights = (
        f"random: init_params(seed={cfg.seed}), normal({config.initializer_range}) weights "
        "(no pretrained checkpoint)"
    )
    return config, init_params(config, seed=int(cfg.seed)), weights


def make_inputs(cfg: DictConfig, config, params):
    """Label words, and (embeds (B, S-L, H), mask, mask_onehot, prompt (P, L, H)) as numpy."""
    import jax

    from secfwt_jax.model import embed_fn, position_ids

    rng = np.random.default_rng(int(cfg.seed))
    b, p, prompt_len = int(cfg.batch), int(cfg.prompts), int(cfg.prompt_len)
    text_len = int(cfg.seq_len) - prompt_len
    if text_len < 3:
        raise ValueError(f"seq_len {cfg.seq_len} leaves {text_len} text tokens; need >= 3")
    if int(cfg.seq_len) > config.max_seq_len:
        raise ValueError(f"seq_len {cfg.seq_len} exceeds the model's {config.max_seq_len}")
    ids = rng.integers(3, config.vocab_size - 1, (b, text_len)).astype(np.int32)
    ids[:, 0], ids[:, -1] = config.bos_token_id, config.eos_token_id
    mask_at = text_len // 2
    ids[:, mask_at] = config.mask_token_id
    mask = np.ones((b, text_len), np.int32)
    mask_onehot = np.zeros((b, text_len), np.float32)
    mask_onehot[:, mask_at] = 1
    pos = position_ids(mask, config, prompt_len)
    embeds = np.asarray(jax.jit(embed_fn(config, prompt_len))(params, ids, pos))
    prompt = (0.1 * rng.standard_normal((p, prompt_len, config.hidden_size))).astype(np.float32)
    words = rng.choice(np.arange(3, config.vocab_size - 1), int(cfg.num_labels), replace=False)
    return [int(w) for w in words], (embeds, mask, mask_onehot, prompt)


def functions_for(config, words, backend, cfg):
    """(secure function, its extra args, plaintext function, its extra args): the extra args
    are one call's trig masks for a model with rfa_trig="masked" (identity masks in
    plaintext), else ()."""
    from secfwt_jax.backend import make_backend
    from secfwt_jax.backend.masked_trig import call_trig_masks, model_ops
    from secfwt_jax.model import verbalizer_fn

    n_seq, seq_len = int(cfg.prompts) * int(cfg.batch), int(cfg.seq_len)
    plain = make_backend("plaintext")
    secure = verbalizer_fn(config, words, ops=model_ops(backend, config))
    masks = call_trig_masks(backend, config, n_seq, seq_len)  # from os.urandom
    plain_masks = call_trig_masks(plain, config, n_seq, seq_len)
    return secure, masks, verbalizer_fn(config, words, ops=model_ops(plain, config)), plain_masks


def same_tree(a, b) -> bool:
    import jax

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def run(cfg: DictConfig, on_record=None) -> list[dict]:
    """All records; `on_record(records)` after each one (so a crash keeps what was measured)."""
    import jax

    from secfwt_jax.backend import PROTOCOLS, check_dealer, make_backend

    bad = [p for p in cfg.protocols if p not in PROTOCOLS or p == "plaintext"]
    if bad:
        raise ValueError(f"unknown protocols {bad}; accepted: {', '.join(PROTOCOLS[1:])}")
    if not bool(cfg.normalize_qk) and any(v["attention"] == "rfa" for v in variants(cfg)):
        print("WARNING: attention=rfa with normalize_qk=false: exp(|k|^2/2) is bounded only by "
              "the inputs and may leave the fixed-point range (docs/masked_trig.md); each secure "
              f"output is checked against plaintext (max_abs_err_limit {cfg.max_abs_err_limit})",
              file=sys.stderr, flush=True)
    dealers = {p: check_dealer(p, cfg.get("dealer") if p == "semi2k" else None)
               for p in cfg.protocols}  # before any work
    prepared = []
    for variant in variants(cfg):
        config, params, weights = model_for(cfg, variant)
        words, inputs = make_inputs(cfg, config, params)
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
                secure, extra, plain, plain_extra = functions_for(config, words, be, cfg)
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
    rec = dict(protocol=protocol, variant=variant, setting=setting, command=command_line(),
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
    head = (
        "| protocol | attention | activation | rfa trig | wall s | MB sent per party | "
        "MB total | send actions per party | LAN s | WAN100 s | WAN200 s | max abs err |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in records:
        m, n, s = r["measured"], r["modelled"]["networks"], r["setting"]
        lines.append(
            f"| {protocol_label(r['protocol'], s.get('dealer'))} | {s['attention']} | "
            f"{s['activation']} | {s['rfa_trig']} | "
            f"{m['wall_s']:.3g} | {' / '.join(f'{b / mb:.3g}' for b in m['bytes_sent'])} | "
            f"{m['bytes_total'] / mb:.4g} | {' / '.join(map(str, m['send_actions']))} | "
            f"{n['lan']['total_s']:.3g} | {n['wan100']['total_s']:.3g} | "
            f"{n['wan200']['total_s']:.3g} | {m['max_abs_err']:.2e}"
            f"{' WRONG' if 'wrong' in r else ''} |"
        )
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


@hydra.main(version_base=None, config_path="conf", config_name="bench_forward")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run_dir = HydraConfig.get().runtime.output_dir
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))

    def write(records):
        with open(os.path.join(run_dir, "forward.json"), "w") as f:
            json.dump(records, f, indent=1)
        with open(os.path.join(run_dir, "forward.md"), "w") as f:
            f.write(markdown(records))

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
