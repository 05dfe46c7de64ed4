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
- fot_secfwt_fused: fot_secfwt with `activation=gelu_puma_fused` (PUMA's GeLU segments with one
  truncation per segment and the comparisons in one call; a named option, not the paper's).
- fot_secfwt_even: fot_secfwt with `activation=gelu_even` (a cheaper GeLU approximation: two
  segments' comparisons instead of three, 0.5 x + an even polynomial in between; not PUMA's
  function, a named option).
- fot_secfwt_lean: fot_secfwt_even with `rfa_lean=true` (the same attention function with two
  secret products fewer per layer: the keys' scale times the mask per key, |k|^2 from the
  normalisation's sum; a named option).
- sft_grad / sft_update: the two parts of an SFT step as separate programs (unit "part"), for
  protocols where the whole step does not fit (Cheetah): sft_grad is the forward + backward,
  sft_update the Adam update of every trainable parameter. The update is element-wise, so it is
  measured on slices (`update_slices=[1024, 512]`: the first 1/1024 and 1/512 of every
  parameter, same leaves and kernels) and its bytes and time are extrapolated linearly in the
  number of entries to the whole model (send actions too where they grow with the entries, as
  under Cheetah; else the larger slice's: secfwt_jax.costs.compose.extrapolate_entries);
  further slices check the line (`line_checks`). Under Cheetah the bytes per entry fall as the
  slices grow, so larger slices give the closer line (experiments/compose_seq.py reads the
  whole update off the two largest measured slices). With both parts in one run, an `sft`
  record "sft_grad + sft_update" is composed (tested against the one-program step:
  tests/test_baselines.py).
Weights, optimizer state and examples are secret inputs; SFT / prompt-tuning outputs stay
secret shares (reveal=False); FoT reveals the (P, B, C) logits to the data owner.

Composition (`compose_from=[1, 2]`): a full RoBERTa-large secure step does not fit this
machine's time, so the N-layer figure is composed from measured programs with 1 and 2 encoder
layers: cost(N) = cost(1) + (N - 1) * (cost(2) - cost(1)), per party and per op class. The
difference cost(2) - cost(1) is the measured cost of one encoder layer (forward and backward
and its optimizer share), cost(1) - that difference is the rest (embedding layer norm, head,
loss) (secfwt_jax.costs.compose.compose_layers). Records say `kind: measured` or
`kind: composed` (with the layer counts used); the record format, the composition rules and the
tables are secfwt_jax.costs (records, compose, report); network times are
secfwt_jax.backend.network.estimate_time's.
Figures at a longer sequence than fits (Cheetah) are composed from shorter ones by
experiments/compose_seq.py.

    python experiments/bench_iteration.py model=tiny layers=2 seq_len=16 population=4
    python experiments/bench_iteration.py model=roberta-large compose_from=[1,2] seq_len=128 \
        protocols=[aby3] out_dir=results/iteration
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import common
import numpy as np
from omegaconf import DictConfig, OmegaConf

from secfwt_jax.backend.common import DEALER_PROTOCOLS
from secfwt_jax.costs import (
    DEFINITIONS,
    FLAT_ROUNDS,
    METHODS,
    SFT_PARTS,
    compose_layers,
    cost_figures,
    networks,
    sft_from_parts,
    whole_update_record,
)
from secfwt_jax.costs.report import write_iteration


@dataclasses.dataclass
class Config(common.AppConfig):
    """`python experiments/bench_iteration.py model=<preset> [layers=N compose_from=[1,2]
    seq_len=.. batch=.. population=.. methods=[..] protocols=[aby3] update_slices=[1024,512]]`:
    iteration.json, iteration.md and plots in the run directory (hydra.run.dir) and in
    out_dir."""

    defaults: list[Any] = dataclasses.field(
        default_factory=common.hydra_defaults({"model": "roberta-large"}))
    hydra: Any = dataclasses.field(default_factory=common.hydra_settings(
        "outputs/bench_iteration/${now:%Y-%m-%d_%H-%M-%S}"))
    # model group (tiny | roberta-base | roberta-large): its preset shapes, random weights
    model: common.ModelGroup = dataclasses.field(default_factory=common.ModelGroup)
    layers: int | None = None  # measure a model with this many encoder layers (null: preset's)
    # e.g. [1, 2]: measure these layer counts and compose the model's N layers
    compose_from: list[int] | None = None
    seq_len: int = 128  # tokens the encoder sees per sequence (soft prompt included)
    batch: int = 1  # B examples per iteration
    population: int = 20  # lambda candidates per FoT generation
    # measured (one call with all lambda x B sequences) | skip
    generation: str = "measured"
    prompt_len: int = 50  # L soft-prompt tokens (prompt tuning and FoT); SFT has none
    # any of secfwt_jax.costs.METHODS
    methods: list[str] = dataclasses.field(
        default_factory=lambda: ["sft", "prompt_tuning", "fot_softmax", "fot_rfa"])
    protocols: list[str] = dataclasses.field(default_factory=lambda: ["aby3"])
    # semi2k's Beaver triples: required with semi2k (docs/backend.md "Dealer")
    dealer: str | None = None
    # sft_update: measure on 1/d of every parameter; line through the first two
    update_slices: list[int] = dataclasses.field(default_factory=lambda: [1024, 512])
    num_features: int = common.ITERATION_DEFAULTS["num_features"]  # RFA random features
    num_labels: int = common.ITERATION_DEFAULTS["num_labels"]
    learning_rate: float = common.ITERATION_DEFAULTS["learning_rate"]
    mode: str = "sim"
    field: str = "FM64"
    fraction_bits: int | None = None  # null: SPU's default for the field (18 for FM64)
    timeout_s: float = 3600  # a party silent this long fails the call
    seed: int = common.ITERATION_DEFAULTS["seed"]
    out_dir: Any = None  # also write the outputs here (e.g. results/iteration/<name>)


# forward-only methods: the run.py method config each one uses (experiments/conf/method/)
FOT_METHOD_CONFIGS = {"fot_softmax": "fot", "fot_rfa": "fot", "fot_puma": "fot_puma",
                      "fot_secfwt": "secfwt", "fot_secfwt_fused": "secfwt",
                      "fot_secfwt_even": "secfwt", "fot_secfwt_lean": "secfwt"}
# (num_features is the benchmark's own setting, cfg.num_features)
LAYER_KEYS = tuple(k for k in common.METHOD_LAYER_KEYS if k != "num_features")
# what a benchmark method sets on top of its method config
FOT_OVERRIDES = {"fot_rfa": {"attention": "rfa"},
                 "fot_secfwt_fused": {"activation": "gelu_puma_fused"},
                 "fot_secfwt_even": {"activation": "gelu_even"},
                 "fot_secfwt_lean": {"activation": "gelu_even", "rfa_lean": True}}


def fot_variant(method: str) -> dict:
    """The layer variants of a forward-only method, read from its method config, so that
    fot_secfwt is exactly `method=secfwt` (fot_rfa: `method=fot` with attention=rfa)."""
    conf = OmegaConf.load(os.path.join(common.CONF_DIR, "method",
                                       FOT_METHOD_CONFIGS[method] + ".yaml"))
    return {**{k: conf[k] for k in LAYER_KEYS}, **FOT_OVERRIDES.get(method, {})}


def model_config(cfg: DictConfig, method: str, layers: int | None):
    return common.iteration_model_config(
        cfg, layers, **(fot_variant(method) if method in FOT_METHOD_CONFIGS else {}))


def measure_update(cfg: DictConfig, be, trainable):
    """CallCost of sft_update on the pytree `trainable` (common.sft_update_program)."""
    fn, args = common.sft_update_program(cfg, be, trainable)
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
        sft_init,
        sft_step_fn,
    )
    from secfwt_jax.model import init_params, verbalizer_fn

    if method == "sft_grad":
        fn, args = common.sft_grad_program(cfg, be, layers)
        fn.precompile(*args)
        _, cost = fn(*args, reveal=False)
        be.delete(args[0])
        return [("part", 1, cost)]
    config = model_config(cfg, method, layers)
    params = init_params(config, seed=int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed) + 1)
    opt = fixed_point_adam(float(cfg.learning_rate))
    prompt_len = 0 if method.startswith("sft") else int(cfg.prompt_len)
    (embeds, mask, mask_onehot, labels), words = common.iteration_inputs(
        cfg, config, params, prompt_len)
    weights = be.put(params, owner="model")
    out = []
    if method == "sft":
        fn = be.compile(sft_step_fn(config, words, opt))
        args = (weights, be.put(sft_init(params, opt)), embeds, mask, mask_onehot, labels)
        fn.precompile(*args)
        _, cost = fn(*args, reveal=False)
        out.append(("iteration", 1, cost))
    elif method == "prompt_tuning":
        prompt = common.random_prompts(rng, 1, prompt_len, config.hidden_size)[0]
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
            prompts = common.random_prompts(rng, p, prompt_len, config.hidden_size)
            # the data owner's fresh masks of this call (shared like any input)
            extra = call_trig_masks(be, config, p * int(cfg.batch), int(cfg.seq_len))
            fn.precompile(weights, embeds, mask, mask_onehot, prompts, *extra)
            _, cost = fn(weights, embeds, mask, mask_onehot, prompts, *extra)
            out.append(("query" if p == 1 else "generation", p, cost))
    be.delete(weights)
    return out


def base_record(cfg, protocol, method, unit, population, config_layers) -> dict:
    key = (method if method in ("sft", "prompt_tuning", *SFT_PARTS) else "fot", unit)
    return dict(
        method=method, protocol=protocol, model=cfg.model.name, layers=config_layers,
        seq_len=int(cfg.seq_len), batch=int(cfg.batch), population=population,
        prompt_len=0 if method.startswith("sft") else int(cfg.prompt_len), unit=unit,
        definition=DEFINITIONS[key], field=cfg.field, mode=cfg.mode,
        weights=f"random: init_params(seed={cfg.seed})", command=common.command_line(),
        **({"dealer": cfg.get("dealer")} if protocol in DEALER_PROTOCOLS else {}),
    )


def update_records(cfg, be_factory, protocol: str, emit) -> None:
    """sft_update on slices 1/d of the trainable parameters (d in cfg.update_slices; the
    step is element-wise), then the full step by a line through the first two slices in the
    number of entries (every figure, per party and op class); further slices check the line."""
    config = model_config(cfg, "sft_update", cfg.layers)
    trainable = common.sft_trainable(cfg)
    total = common.n_entries(trainable)
    slices = []
    for d in cfg.update_slices:
        part = common.param_slices(trainable, int(d))
        with be_factory() as be:
            fig = cost_figures(measure_update(cfg, be, part))
        slices.append(dict(base_record(cfg, protocol, "sft_update", "part", 1,
                                       config.num_hidden_layers), kind="measured",
                           slice_divisor=int(d), entries=common.n_entries(part),
                           entries_full=total,
                           **fig, networks=networks(fig)))
        emit(slices[-1])
    if len(slices) >= 2 and slices[0]["entries"] != slices[1]["entries"]:
        emit(whole_update_record(
            (slices[0], slices[1]), slices[2:],
            "linear in the entries updated, through the first two measured slices (send "
            f"actions: the second's where they do not grow by more than {FLAT_ROUNDS:.0%})"))


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
                                dealer=cfg.get("dealer") if protocol in DEALER_PROTOCOLS
                                else None)

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
                    fig = compose_layers(f1, f2, n_layers)
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


@common.hydra_app(Config, "bench_iteration")
def main(cfg: DictConfig) -> None:
    run_dir = common.run_dir()
    common.write_config(run_dir, cfg)

    def save(records):
        write_iteration(records, run_dir)
        if cfg.out_dir:
            write_iteration(records, str(cfg.out_dir))

    save(run(cfg, on_record=save))
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()
