"""Cost of one iteration of each tuning method under SPU protocols.

Methods and what "one iteration" is (every record states it in `unit` and `definition`):
- sft: one optimizer step on one batch: forward, backward (jax.grad) and Adam on every
  parameter but the embedding tables, as ONE secure program (secfwt_jax.baselines).
- prompt_tuning: one optimizer step on one batch, gradients and Adam on the soft prompt only.
- fot_softmax / fot_rfa: forward-only tuning with softmax / random-feature attention (SPU's
  built-in exp, reciprocal, cos and sin; erf GeLU), in two units: "query" = the verbalizer
  logits of one candidate prompt on one batch; "generation" = one call for all `population`
  candidates on the batch (the unit of one CMA-ES step).
- fot_puma: the same with PUMA's softmax and GeLU (method=fot_puma, the fair softmax baseline).
- fot_secfwt: the same as method=secfwt: RFA with l2-normalised q/k, the one-round masked
  cos/sin (fresh masks from the data owner each call, shared as inputs and counted) and PUMA's
  GeLU.
- sft_grad / sft_update: the two parts of an SFT step as separate programs (unit "part"), for
  protocols where the whole step does not fit (Cheetah): sft_grad is the forward + backward,
  sft_update the Adam update of every trainable parameter. The update is element-wise, so it is
  measured on slices (`update_slices=[1024, 512]`: the first 1/1024 and 1/512 of every
  parameter, same leaves and kernels) and its bytes and time are extrapolated linearly in the
  number of entries to the whole model (send actions too where they grow with the entries, as
  under Cheetah; else the larger slice's: `extrapolate_entries`); further slices check the line
  (`line_checks`). Under Cheetah the bytes per entry fall as the slices grow, so larger slices
  give the closer line (experiments/compose_seq.py reads the whole update off the two largest
  measured slices). With both parts in one run, an `sft` record "sft_grad + sft_update" is
  composed (tested against the one-program step: tests/test_baselines.py).
Weights, optimizer state and examples are secret inputs; SFT / prompt-tuning outputs stay
secret shares (reveal=False); FoT reveals the (P, B, C) logits to the data owner.

Composition (`compose_from=[1, 2]`): a full RoBERTa-large secure step does not fit this
machine's time, so the N-layer figure is composed from measured programs with 1 and 2 encoder
layers: cost(N) = cost(1) + (N - 1) * (cost(2) - cost(1)), per party and per op class. The
difference cost(2) - cost(1) is the measured cost of one encoder layer (forward and backward
and its optimizer share), cost(1) - that difference is the rest (embedding layer norm, head,
loss). Records say `kind: measured` or `kind: composed` (with the layer counts used).
Figures at a longer sequence than fits (Cheetah) are composed from shorter ones by
experiments/compose_seq.py.

    python experiments/bench_iteration.py model=tiny layers=2 seq_len=16 population=4
    python experiments/bench_iteration.py model=roberta-large compose_from=[1,2] seq_len=128 \
        protocols=[aby3] out_dir=results/iteration
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("sft", "prompt_tuning", "fot_softmax", "fot_rfa", "fot_puma", "fot_secfwt",
           "sft_grad", "sft_update")
# the two parts of an SFT step, measured apart where the whole step does not fit (Cheetah)
SFT_PARTS = ("sft_grad", "sft_update")
# forward-only methods: the run.py method config each one uses (experiments/conf/method/)
FOT_METHOD_CONFIGS = {"fot_softmax": "fot", "fot_rfa": "fot", "fot_puma": "fot_puma",
                      "fot_secfwt": "secfwt"}
LAYER_KEYS = ("attention", "activation", "feature_kind", "normalize_qk", "rfa_trig")


def fot_variant(method: str) -> dict:
    """The layer variants of a forward-only method, read from its method config, so that
    fot_secfwt is exactly `method=secfwt` (fot_rfa: `method=fot` with attention=rfa)."""
    conf_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf", "method")
    conf = OmegaConf.load(os.path.join(conf_dir, FOT_METHOD_CONFIGS[method] + ".yaml"))
    over = {k: conf[k] for k in LAYER_KEYS}
    if method == "fot_rfa":
        over["attention"] = "rfa"
    return over


DEFINITIONS = {
    ("sft", "iteration"): "one Adam step on one batch: forward + backward + update of all "
    "non-embedding parameters, one secure program",
    ("sft_grad", "part"): "the forward + backward part of one SFT step (gradients of all "
    "non-embedding parameters on one batch), one secure program",
    ("sft_update", "part"): "the Adam part of one SFT step (moments, update and new "
    "parameters for every non-embedding parameter), one secure program",
    ("prompt_tuning", "iteration"): "one Adam step on one batch: forward + backward to the "
    "soft prompt + update of the prompt, one secure program",
    ("fot", "query"): "forward of one candidate prompt on one batch (verbalizer logits)",
    ("fot", "generation"): "forward of all population candidates on one batch, one call",
}
NETS = ("lan", "wan100", "wan200")


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def model_config(cfg: DictConfig, method: str, layers: int | None):
    from secfwt_jax.config import ModelConfig

    over = dict(initializer_range=float(cfg.model.initializer_range),
                num_features=int(cfg.num_features))
    if method in FOT_METHOD_CONFIGS:
        over.update(fot_variant(method))
    if layers:
        over["num_hidden_layers"] = int(layers)
    return ModelConfig.preset(cfg.model.name, **over)


def inputs(cfg: DictConfig, config, params, prompt_len: int):
    """(embeds (B, S-L, H), mask, mask_onehot, labels_onehot (B, C)) numpy, and label words."""
    import jax

    from secfwt_jax.model import embed_fn, position_ids

    rng = np.random.default_rng(int(cfg.seed))
    b, text_len = int(cfg.batch), int(cfg.seq_len) - prompt_len
    ids = rng.integers(3, config.vocab_size - 1, (b, text_len)).astype(np.int32)
    ids[:, 0], ids[:, -1] = config.bos_token_id, config.eos_token_id
    ids[:, text_len // 2] = config.mask_token_id
    mask = np.ones((b, text_len), np.int32)
    mask_onehot = np.zeros((b, text_len), np.float32)
    mask_onehot[:, text_len // 2] = 1
    embeds = np.asarray(jax.jit(embed_fn(config, prompt_len))(
        params, ids, position_ids(mask, config, prompt_len)))
    c = int(cfg.num_labels)
    labels = np.eye(c, dtype=np.float32)[rng.integers(0, c, b)]
    words = [int(w) for w in rng.choice(np.arange(3, config.vocab_size - 1), c, replace=False)]
    return (embeds, mask, mask_onehot, labels), words


def param_slices(tree, divisor: int):
    """Every leaf flattened and cut to its first ceil(n / divisor) entries: a pytree with the
    same leaves (so the same kernels and rounds) and about 1/divisor of the entries."""
    import jax

    return jax.tree_util.tree_map(
        lambda x: np.asarray(x).reshape(-1)[: -(-np.size(x) // divisor)], tree)


def n_entries(tree) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def measure_update(cfg: DictConfig, be, trainable):
    """CallCost of sft_update (the Adam part of an SFT step) on the pytree `trainable`
    (element-wise: no examples, only parameters, moments and gradients, all secret)."""
    import jax

    from secfwt_jax.baselines import fixed_point_adam, pack_state, sft_update_fn

    rng = np.random.default_rng(int(cfg.seed) + 1)
    opt = fixed_point_adam(float(cfg.learning_rate))
    grads = jax.tree_util.tree_map(
        lambda x: (1e-3 * rng.standard_normal(x.shape)).astype(np.float32), trainable)
    args = (be.put(trainable), be.put(pack_state(opt.init(trainable))), be.put(grads))
    fn = be.compile(sft_update_fn(opt))
    fn.precompile(*args)
    _, cost = fn(*args, reveal=False)
    for a in args:
        be.delete(a)
    return cost


def measure(cfg: DictConfig, be, method: str, layers: int | None) -> list[tuple[str, int, object]]:
    """[(unit, population, CallCost)] of one method on a model with `layers` encoder layers
    (sft_update: `update_records`)."""
    from secfwt_jax.baselines import (
        fixed_point_adam,
        prompt_init,
        prompt_step_fn,
        sft_grad_fn,
        sft_init,
        sft_step_fn,
    )
    from secfwt_jax.model import init_params, verbalizer_fn

    config = model_config(cfg, method, layers)
    params = init_params(config, seed=int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed) + 1)
    opt = fixed_point_adam(float(cfg.learning_rate))
    prompt_len = 0 if method.startswith("sft") else int(cfg.prompt_len)
    (embeds, mask, mask_onehot, labels), words = inputs(cfg, config, params, prompt_len)
    weights = be.put(params, owner="model")
    out = []
    if method in ("sft", "sft_grad"):
        if method == "sft":
            fn = be.compile(sft_step_fn(config, words, opt))
            args = (weights, be.put(sft_init(params, opt)), embeds, mask, mask_onehot, labels)
        else:
            fn = be.compile(sft_grad_fn(config, words))
            args = (weights, embeds, mask, mask_onehot, labels)
        fn.precompile(*args)
        _, cost = fn(*args, reveal=False)
        out.append(("iteration" if method == "sft" else "part", 1, cost))
    elif method == "prompt_tuning":
        prompt = (0.1 * rng.standard_normal((prompt_len, config.hidden_size))).astype(np.float32)
        fn = be.compile(prompt_step_fn(config, words, opt))
        args = (weights, prompt, be.put(prompt_init(prompt, opt)), embeds, mask, mask_onehot,
                labels)
        fn.precompile(*args)
        _, cost = fn(*args, reveal=False)
        out.append(("iteration", 1, cost))
    else:
        from secfwt_jax.backend.masked_trig import call_trig_masks, model_ops

        fn = be.compile(verbalizer_fn(config, words, ops=model_ops(be, config)))
        pops = [1] + ([int(cfg.population)] if cfg.generation == "measured" else [])
        for p in pops:
            prompts = (0.1 * rng.standard_normal((p, prompt_len, config.hidden_size))).astype(
                np.float32)
            # the data owner's fresh masks of this call (shared like any input)
            extra = call_trig_masks(be, config, p * int(cfg.batch), int(cfg.seq_len))
            fn.precompile(weights, embeds, mask, mask_onehot, prompts, *extra)
            _, cost = fn(weights, embeds, mask, mask_onehot, prompts, *extra)
            out.append(("query" if p == 1 else "generation", p, cost))
    be.delete(weights)
    return out


def cost_figures(cost) -> dict:
    """The measured figures of a CallCost as plain numbers."""
    return dict(
        wall_s=float(cost.wall_s), bytes_total=int(cost.bytes_total),
        bytes_sent=[int(b) for b in cost.bytes_sent],
        send_actions=[int(a) for a in cost.send_actions],
        send_actions_total=int(cost.send_actions_total),
        by_op_class={k: dict(time_s=float(v.time_s), bytes=int(v.bytes),
                             send_actions=int(v.send_actions))
                     for k, v in cost.by_op_class.items()},
        party_order=cost.party_order,
    )


def networks(fig: dict) -> dict:
    """Modelled seconds on each network (secfwt_jax.backend.network's formula)."""
    from secfwt_jax.backend.network import NETWORKS

    out = {}
    for name in NETS:
        net = NETWORKS[name]
        transfer = 8.0 * max(fig["bytes_sent"]) / net.bandwidth_bps
        latency = max(fig["send_actions"]) * net.latency_s
        out[name] = dict(total_s=fig["wall_s"] + transfer + latency, transfer_s=transfer,
                         latency_s=latency, compute_s=fig["wall_s"])
    return out


def combine(figs: list[dict], leaf) -> dict:
    """leaf(values of one figure across `figs`) for every numeric figure of same-shaped figure
    dicts (nested dicts and lists walked; ints rounded; strings kept from the first)."""

    def go(*vals):
        a = vals[0]
        if isinstance(a, dict):
            return {k: go(*(v[k] for v in vals)) for k in a}
        if isinstance(a, list):
            return [go(*items) for items in zip(*vals)]
        if isinstance(a, str):
            return a
        v = leaf(*vals)
        return int(round(v)) if isinstance(a, int) else float(v)

    return go(*figs)


def lin(f1: dict, f2: dict, t: float) -> dict:
    """f1 + t (f2 - f1) for every figure (ints rounded; strings kept)."""
    return combine([f1, f2], lambda a, b: a + t * (b - a))


def compose(f1: dict, f2: dict, n: int) -> dict:
    """cost(n) = cost(1) + (n - 1) (cost(2) - cost(1)), for every measured figure."""
    return lin(f1, f2, n - 1)


def add(f1: dict, f2: dict) -> dict:
    """The figures of two programs run one after the other (op classes summed)."""
    classes = {k: dict(time_s=0.0, bytes=0, send_actions=0)
               for k in [*f1["by_op_class"], *f2["by_op_class"]]}
    for f in (f1, f2):
        for k, v in f["by_op_class"].items():
            for q in classes[k]:
                classes[k][q] += v[q]
    return dict(
        wall_s=f1["wall_s"] + f2["wall_s"], bytes_total=f1["bytes_total"] + f2["bytes_total"],
        bytes_sent=[a + b for a, b in zip(f1["bytes_sent"], f2["bytes_sent"])],
        send_actions=[a + b for a, b in zip(f1["send_actions"], f2["send_actions"])],
        send_actions_total=f1["send_actions_total"] + f2["send_actions_total"],
        by_op_class=classes, party_order=f1["party_order"],
    )


FIGURES = ("wall_s", "bytes_total", "bytes_sent", "send_actions", "send_actions_total",
           "by_op_class", "party_order")


BASE_KEYS = ("method", "protocol", "model", "layers", "seq_len", "batch", "population",
             "prompt_len", "unit", "definition", "field", "mode", "weights", "command")


def base_record(cfg, protocol, method, unit, population, config_layers) -> dict:
    key = (method if method in ("sft", "prompt_tuning", *SFT_PARTS) else "fot", unit)
    return dict(
        method=method, protocol=protocol, model=cfg.model.name, layers=config_layers,
        seq_len=int(cfg.seq_len), batch=int(cfg.batch), population=population,
        prompt_len=0 if method.startswith("sft") else int(cfg.prompt_len), unit=unit,
        definition=DEFINITIONS[key], field=cfg.field, mode=cfg.mode,
        weights=f"random: init_params(seed={cfg.seed})", command=command_line(),
        **({"dealer": cfg.get("dealer")} if protocol == "semi2k" else {}),
    )


FLAT_ROUNDS = 0.05  # send-action counts of two slices this close (relative) do not grow


def extrapolate_entries(f1: dict, f2: dict, n1: int, n2: int, total: int) -> dict:
    """The figures of an element-wise program on `total` entries from its figures on n1 < n2.

    Bytes and time: the line through the two. Send actions: the line too where they grow with
    the entries (Cheetah: 1.7x for 2x, its OT batches), else the larger slice's
    (`keep_flat_rounds`)."""
    return keep_flat_rounds(f1, f2, lin(f1, f2, (total - n1) / (n2 - n1)))


def keep_flat_rounds(f1: dict, f2: dict, fig: dict) -> dict:
    """`fig` (extrapolated from f1 and f2) with the send-action counts that do not grow from
    f1 to f2 by more than FLAT_ROUNDS replaced by f2's: ABY3 / SEMI2K send one message per
    kernel and leaf whatever the size (the counts differ by noise of +-1%), and a line through
    two noisy near-equal counts, read far out, would be noise (or negative: Cheetah's
    truncation class went from 13726 to 12894 between slices). Counts that grow (Cheetah's OT
    batches) keep their extrapolated value."""

    def flat(c1, c2):  # does not grow (counts that shrink, by noise, are not read out either)
        return c2 - c1 <= FLAT_ROUNDS * max(c2, 1)

    def rounds(c1, c2, c):
        return c2 if flat(c1, c2) else c

    # judged on the all-party total: in sim mode SPU's log splits ABY3's counts between
    # parties 1 and 2 unevenly (README), so a single party's count is noisier than the total
    if flat(f1["send_actions_total"], f2["send_actions_total"]):
        fig["send_actions"] = list(f2["send_actions"])
        fig["send_actions_total"] = f2["send_actions_total"]
    for k, v in fig["by_op_class"].items():
        v["send_actions"] = rounds(f1["by_op_class"][k]["send_actions"],
                                   f2["by_op_class"][k]["send_actions"], v["send_actions"])
    return fig


def figures_of(record: dict) -> dict:
    return {k: record[k] for k in FIGURES}


def whole_update_record(line: tuple[dict, dict], others: list[dict], composition: str) -> dict:
    """The sft_update record of all entries, read off the line through the two measured slice
    records `line` (`extrapolate_entries`); each of `others` (measured slices) is checked
    against the line: its prediction / the measurement, in `line_checks`."""
    a, b = line
    total = b["entries_full"]

    def at(n):
        return extrapolate_entries(figures_of(a), figures_of(b), a["entries"], b["entries"], n)

    checks = []
    for r in others:
        p = at(r["entries"])
        checks.append(dict(entries=r["entries"], bytes_ratio=p["bytes_total"] / r["bytes_total"],
                           wall_ratio=p["wall_s"] / r["wall_s"],
                           send_actions_ratio=p["send_actions_total"] / r["send_actions_total"]))
    fig = at(total)
    return dict({k: b[k] for k in BASE_KEYS}, kind="composed", entries=total,
                entries_full=total, composed_from_entries=[a["entries"], b["entries"]],
                line_checks=checks, composition=composition, **fig, networks=networks(fig))


def update_records(cfg, be_factory, protocol: str, emit) -> None:
    """sft_update on slices 1/d of the trainable parameters (d in cfg.update_slices; the
    step is element-wise), then the full step by a line through the first two slices in the
    number of entries (every figure, per party and op class); further slices check the line."""
    from secfwt_jax.baselines import split_params
    from secfwt_jax.model import init_params

    config = model_config(cfg, "sft_update", cfg.layers)
    trainable = split_params(init_params(config, seed=int(cfg.seed)))[0]
    total = n_entries(trainable)
    slices = []
    for d in cfg.update_slices:
        part = param_slices(trainable, int(d))
        with be_factory() as be:
            fig = cost_figures(measure_update(cfg, be, part))
        slices.append(dict(base_record(cfg, protocol, "sft_update", "part", 1,
                                       config.num_hidden_layers), kind="measured",
                           slice_divisor=int(d), entries=n_entries(part), entries_full=total,
                           **fig, networks=networks(fig)))
        emit(slices[-1])
    if len(slices) >= 2 and slices[0]["entries"] != slices[1]["entries"]:
        emit(whole_update_record(
            (slices[0], slices[1]), slices[2:],
            "linear in the entries updated, through the first two measured slices (send "
            f"actions: the second's where they do not grow by more than {FLAT_ROUNDS:.0%})"))


def sft_from_parts(records: list[dict], protocol: str, n_layers: int) -> dict | None:
    """An SFT step = sft_grad + sft_update of the full model, when `records` have both."""
    full = {}
    for r in records:  # sft_update: only records of all entries (no slice)
        whole = r.get("entries") == r.get("entries_full")
        if r["protocol"] == protocol and r["method"] in SFT_PARTS and r["layers"] == n_layers \
                and whole:
            full[r["method"]] = r  # the last: composed after measured
    if len(full) < 2:
        return None
    g, u = full["sft_grad"], full["sft_update"]
    fig = add(figures_of(g), figures_of(u))
    base = {k: g[k] for k in BASE_KEYS}
    base.update(method="sft", unit="iteration", population=1,
                definition=DEFINITIONS[("sft", "iteration")])
    return dict(base, kind="composed",
                composition="sft_grad + sft_update (the two parts of one SFT step, "
                "measured as separate programs)",
                parts={m: {k: r.get(k) for k in ("kind", "seq_len", "wall_s", "bytes_total",
                                                 "composition")} for m, r in full.items()},
                **fig, networks=networks(fig))


def run(cfg: DictConfig, on_record=None) -> list[dict]:
    """All records; `on_record(records)` after each one, so a crash keeps what was measured."""
    from secfwt_jax.backend import make_backend

    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; accepted: {', '.join(METHODS)}")
    n_layers = model_config(cfg, "sft", cfg.layers).num_hidden_layers
    layer_counts = list(cfg.compose_from) if cfg.compose_from else [cfg.layers]
    if cfg.compose_from and sorted(int(x) for x in cfg.compose_from) != [1, 2]:
        raise ValueError(f"compose_from must be [1, 2], got {list(cfg.compose_from)}")
    records = []

    def emit(rec):
        records.append(rec)
        print(summary_line(rec), flush=True)
        if on_record:
            on_record(records)

    for protocol in cfg.protocols:
        def backend(protocol=protocol):
            return make_backend(protocol, mode=cfg.mode, field=cfg.field,
                                fraction_bits=cfg.fraction_bits, timeout_s=float(cfg.timeout_s),
                                dealer=cfg.get("dealer") if protocol == "semi2k" else None)

        for method in cfg.methods:
            if method == "sft_update":
                update_records(cfg, backend, protocol, emit)
                continue
            measured = {}
            for layers in layer_counts:
                with backend() as be:
                    t = time.perf_counter()
                    results = measure(cfg, be, method, layers)
                    print(f"{protocol} {method} layers={layers}: "
                          f"{time.perf_counter() - t:.1f} s in all", flush=True)
                for unit, pop, cost in results:
                    fig = cost_figures(cost)
                    measured[(unit, layers)] = (pop, fig)
                    nl = model_config(cfg, method, layers).num_hidden_layers
                    emit(dict(base_record(cfg, protocol, method, unit, pop, nl), kind="measured",
                              **fig, networks=networks(fig)))
            if cfg.compose_from:
                for unit in sorted({u for u, _ in measured}):
                    (pop, f1), (_, f2) = measured[(unit, 1)], measured[(unit, 2)]
                    fig = compose(f1, f2, n_layers)
                    emit(dict(base_record(cfg, protocol, method, unit, pop, n_layers),
                              kind="composed", composed_from_layers=[1, 2],
                              composition="cost(1) + (N - 1) * (cost(2) - cost(1))",
                              **fig, networks=networks(fig)))
        rec = sft_from_parts(records, protocol, n_layers)
        if rec is not None:
            emit(rec)
    return records


def summary_line(r: dict) -> str:
    return (f"{r['protocol']:7s} {r['method']:13s} {r['unit']:10s} L={r['layers']:<3d} "
            f"P={r['population']:<3d} {r['kind']:8s} wall {r['wall_s']:.2f} s  "
            f"GB {r['bytes_total'] / 1e9:.4g}  LAN {r['networks']['lan']['total_s']:.3g} s")


def markdown(records: list[dict]) -> str:
    from secfwt_jax.backend.common import protocol_label

    head = ("| method | protocol | unit | seq | layers | P | kind | wall s | GB total | "
            "GB per party | send actions (max party) | LAN s | WAN100 s | WAN200 s |")
    lines = [head, "|" + "---|" * 14]
    for r in records:
        n = r["networks"]
        lines.append(
            f"| {r['method']} | {protocol_label(r['protocol'], r.get('dealer'))} | {r['unit']} | "
            f"{r['seq_len']} | {r['layers']} | "
            f"{r['population']} | {r['kind']} | {r['wall_s']:.3g} | {r['bytes_total'] / 1e9:.4g} "
            f"| {' / '.join(f'{b / 1e9:.3g}' for b in r['bytes_sent'])} | "
            f"{max(r['send_actions'])} | {n['lan']['total_s']:.3g} | "
            f"{n['wan100']['total_s']:.3g} | {n['wan200']['total_s']:.3g} |")
    notes = ["", "Units: " + "; ".join(f"{m} / {u}: {d}" for (m, u), d in DEFINITIONS.items())
             + ".", "wall s, bytes and send actions are measured on this machine (kind "
             "measured) or composed from measured programs (kind composed: from 1- and 2-layer "
             "programs, from shorter sequences or from the two parts of an SFT step, as each "
             "record's `composition` says); "
             "network times are modelled (wall + max-party bytes / bandwidth + max-party send "
             "actions x latency; docs/backend.md). GB = 10^9 bytes."]
    if records:
        notes.append(f"Command: `{records[0]['command']}`")
    return "\n".join(lines + notes) + "\n"


def plots(records: list[dict], path_prefix: str) -> list[str]:
    """Bar plots of time (LAN) and bytes per method and protocol, stacked by op class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = ("matmul", "exp", "reciprocal", "comparison", "trig", "other")
    keep = {}
    for r in records:  # per (method-unit, protocol): the composed record if any, else measured
        key = (f"{r['method']}\n{r['unit']}", r["protocol"])
        if key not in keep or r["kind"] == "composed" or r["layers"] > keep[key]["layers"]:
            keep[key] = r
    labels = [f"{m}\n{p}" for m, p in keep]
    paths = []
    for what, unit in (("bytes", 1e9), ("time_s", 1.0)):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4))
        bottom = np.zeros(len(keep))
        for c in classes:
            vals = np.array([r["by_op_class"].get(c, {}).get(what, 0) / unit
                             for r in keep.values()])
            ax.bar(labels, vals, bottom=bottom, label=c)
            bottom += vals
        ax.set_ylabel("GB sent (all parties)" if what == "bytes" else "party time s (mean)")
        ax.set_title(f"one iteration: {'bytes' if what == 'bytes' else 'time'} by op class")
        ax.legend(fontsize=7)
        plt.setp(ax.get_xticklabels(), fontsize=7)
        fig.tight_layout()
        path = f"{path_prefix}_{what}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_outputs(records: list[dict], directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "iteration.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(directory, "iteration.md"), "w") as f:
        f.write(markdown(records))
    plots(records, os.path.join(directory, "iteration"))


@hydra.main(version_base=None, config_path="conf", config_name="bench_iteration")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run_dir = HydraConfig.get().runtime.output_dir
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    def save(records):
        write_outputs(records, run_dir)
        if cfg.out_dir:
            write_outputs(records, str(cfg.out_dir))

    save(run(cfg, on_record=save))
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()
