"""Throughput of the plaintext evaluator of one tuning generation, and of its SPU fixed-point
emulation: queries per second and the wall time of a full Black-Box-Tuning budget.

One generation = lambda candidate prompts x batch examples in ONE jitted call of the model's
verbalizer (secfwt_jax.model.verbalizer_fn) plus the candidates' losses; the examples' token
embeddings (the frozen part, embed_fn) are computed once, outside the timing. A query is one
candidate evaluated on the batch (BBT's budget: 8000 queries = 400 generations of 20).

Cases, each a row of the output table:
  population            float32, all candidates in one call (sharded over the candidate axis
                        when JAX sees several devices; a no-op with one)
  population_bf16       the same with params, embeddings and prompts cast to bfloat16
  loop                  a Python loop over candidates, one jitted call (P=1) per candidate
  population_fxp        the same call through secfwt_jax.backend.fxp.fxp_transform (SPU FM64
                        fixed-point numerics emulated in plaintext)
  tuning                the whole plaintext tuning loop, end to end and not extrapolated:
                        secfwt_jax.tuning.loop.Tuner on the plaintext backend runs the full
                        budget (ask, projection z -> prompts, one evaluator call, tell, per
                        generation; BBT's dev check every --eval-every calls; the final
                        train evaluation) on random examples with random labels (timing only:
                        the loss is real, the task is not)

From the repository root. GPU (one H200, jax 0.11 / flax 0.12 / Python 3.12, no spu), one
command, a few minutes:
    python experiments/bench_simulation.py --model roberta-large
The population cases time a few generations and extrapolate to the budget (the output says so);
the tuning case runs the budget. CPU here:
    python experiments/bench_simulation.py --model tiny --generations 5
    python experiments/bench_simulation.py --model roberta-base --layers 1 --generations 2 \
        --loop-generations 1

Writes results/simulation/bench_<model>[_L<layers>]_<device>.json and .md (the full setting,
the command line, one row per case). Never imports spu (checked at start).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

from secfwt_jax.backend.fxp import fxp_transform  # no spu: checked in run
from secfwt_jax.config import PRESETS, ModelConfig, check_choice
from secfwt_jax.model import init_params, verbalizer_fn
from secfwt_jax.tuning.evaluator import candidate_losses

CASES = ("population", "population_bf16", "loop", "population_fxp", "tuning")
BUDGET = 8000
MATMUL_PRECISIONS = ("default", "high", "highest")


@dataclasses.dataclass
class Config(common.AppConfig):
    """The benchmark's settings (legacy form: --model tiny --cases tuning,loop --fxp-fast)."""

    model: str = "roberta-large"  # a preset: tiny | roberta-base | roberta-large
    layers: int | None = None  # override num_hidden_layers
    batch: int = 32
    seq: int = 64  # text tokens per example
    prompt_len: int = 50
    popsize: int = 20  # lambda, candidates per generation
    budget: int = BUDGET  # queries of the projected run
    generations: int = 20  # timed generations per case
    loop_generations: int = 3  # timed generations of the Python-loop case
    fxp_generations: int = 5  # timed generations of the fixed-point case
    cases: list[str] = dataclasses.field(default_factory=lambda: list(CASES))  # subset of CASES
    # jax.default_matmul_precision for the float32 cases (GPU: default=TF32): default|high|highest
    matmul_precision: str = "default"
    fxp_fast: bool = False  # fixed-point case without exact (Dekker) products: not bit-exact
    optimizer: str = "cmaes"  # tuning case: TuningConfig.optimizer
    intrinsic_dim: int = 500  # tuning case: d
    dev: int = 32  # tuning case: dev examples
    eval_every: int = 100  # tuning case: calls between BBT's dev checks (BBT: 100; 0: none)
    seed: int = 0
    out: str = os.path.join("results", "simulation")


def check_config(cfg) -> None:
    """ValueError naming the bad value and the accepted ones, before any work."""
    check_choice("model preset", cfg.model, tuple(PRESETS))
    check_choice("matmul_precision", cfg.matmul_precision, MATMUL_PRECISIONS)
    for case in cfg.cases:
        check_choice("case", case, CASES)


def setting(args, cfg: ModelConfig, devices) -> dict:
    import flax

    return dict(
        command=common.command_line(),
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        platform=devices[0].platform, device_kind=devices[0].device_kind, devices=len(devices),
        host=platform.node(), cpu_count=os.cpu_count(), python=platform.python_version(),
        jax=jax.__version__, jaxlib=_jaxlib_version(), flax=flax.__version__,
        load_avg_1min_at_start=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        model=args.model, layers=cfg.num_hidden_layers, hidden=cfg.hidden_size,
        heads=cfg.num_attention_heads, intermediate=cfg.intermediate_size, vocab=cfg.vocab_size,
        attention=cfg.attention, activation=cfg.activation, batch=args.batch, seq=args.seq,
        prompt_len=args.prompt_len, total_seq=args.seq + args.prompt_len, popsize=args.popsize,
        budget_queries=args.budget, matmul_precision=args.matmul_precision,
        weights="random (init_params)",
    )


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # noqa: BLE001 - only a label
        return None


def make_problem(args, cfg: ModelConfig):
    """Random padded examples (B, S) with a <mask> each (common.random_examples), their frozen
    embeddings, labels, and the prompts of every timed generation (G, P, L, H) scaled like
    BBT's (embedding std)."""
    rng = np.random.default_rng(args.seed)
    ids, mask, mask_onehot = common.random_examples(cfg, rng, args.batch, args.seq, padded=True)
    labels = rng.integers(0, 2, args.batch).astype(np.int32)
    params = init_params(cfg, args.seed)
    embeds = common.embed_examples(cfg, params, ids, mask, args.prompt_len)
    std = float(jnp.std(params["word_embeddings"]))
    n_gen = max(args.generations, args.loop_generations, args.fxp_generations) + 1
    prompts = (rng.standard_normal((n_gen, args.popsize, args.prompt_len, cfg.hidden_size))
               * std).astype(np.float32)
    return params, embeds, mask, mask_onehot, labels, prompts


def losses_fn(cfg: ModelConfig, label_word_ids, fxp_options: dict | None = None):
    """(params, embeds, mask, mask_onehot, prompts (P, L, H), labels) -> (P,) CE losses.

    fxp_options: run the verbalizer (the servers' part) through fxp_transform with these
    options; the loss stays plaintext float32 (the data owner's part, reveal="logits")."""
    verbalize = verbalizer_fn(cfg, label_word_ids)
    if fxp_options is not None:
        verbalize = fxp_transform(verbalize, **fxp_options)

    def f(params, embeds, mask, mask_onehot, prompts, labels):
        logits = verbalize(params, embeds, mask, mask_onehot, prompts)
        return candidate_losses(logits.astype(jnp.float32), labels)

    return f


def population_sharding(popsize: int):
    """(prompt sharding, replicated sharding, number of devices used): the candidate axis split
    over the largest number of devices that divides popsize."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    n = max(d for d in range(1, len(devices) + 1) if popsize % d == 0)
    mesh = Mesh(np.array(devices[:n]), ("pop",))
    return NamedSharding(mesh, PartitionSpec("pop")), NamedSharding(mesh, PartitionSpec()), n


def to_bf16(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


@dataclasses.dataclass
class CaseResult:
    case: str
    dtype: str
    devices: int
    generations: int
    compile_s: float
    gen_s: list
    max_loss_diff_vs_float32: float | None = None

    def summary(self, popsize: int, batch: int, budget: int) -> dict:
        med = float(np.median(self.gen_s))
        generations = budget / popsize
        return dict(
            case=self.case, dtype=self.dtype, devices=self.devices,
            timed_generations=self.generations, compile_s=round(self.compile_s, 3),
            generation_s_median=med, generation_s_min=float(np.min(self.gen_s)),
            queries_per_s=popsize / med, sequences_per_s=popsize * batch / med,
            budget_s=generations * med, budget_s_with_compile=generations * med + self.compile_s,
            budget_extrapolated=self.generations < generations,
            max_loss_diff_vs_float32=self.max_loss_diff_vs_float32,
        )


def time_population(f, args_fixed, prompts, labels, generations, prompt_sharding):
    """Compile (first call, excluded), then time `generations` calls; returns (compile_s,
    [seconds per generation], losses of generation 0)."""
    put = (lambda x: jax.device_put(x, prompt_sharding)) if prompt_sharding else jnp.asarray
    batches = [put(prompts[g]) for g in range(generations + 1)]
    t = time.perf_counter()
    first = jax.block_until_ready(f(*args_fixed, batches[0], labels))
    compile_s = time.perf_counter() - t
    times = []
    for g in range(1, generations + 1):
        t = time.perf_counter()
        jax.block_until_ready(f(*args_fixed, batches[g], labels))
        times.append(time.perf_counter() - t)
    return compile_s, times, np.asarray(first)


def time_loop(f, args_fixed, prompts, labels, generations):
    """A Python loop over candidates: one jitted call of one candidate at a time, each result
    fetched before the next call (what a per-candidate evaluator does)."""
    one = [[jnp.asarray(prompts[g, i:i + 1]) for i in range(prompts.shape[1])]
           for g in range(generations + 1)]
    t = time.perf_counter()
    first = [float(f(*args_fixed, p, labels)[0]) for p in one[0][:1]]
    compile_s = time.perf_counter() - t
    times = []
    for g in range(1, generations + 1):
        t = time.perf_counter()
        _ = [float(f(*args_fixed, p, labels)[0]) for p in one[g]]
        times.append(time.perf_counter() - t)
    return compile_s, times, np.asarray(first)


def run(args) -> dict:
    check_config(args)
    if "spu" in sys.modules:
        raise RuntimeError("spu was imported: this benchmark must run where spu is absent")
    overrides = {} if args.layers is None else {"num_hidden_layers": args.layers}
    cfg = ModelConfig.preset(args.model, **overrides)
    if args.seq + args.prompt_len > cfg.max_seq_len:
        raise ValueError(
            f"seq {args.seq} + prompt_len {args.prompt_len} exceeds the model's "
            f"{cfg.max_seq_len} positions"
        )
    devices = jax.devices()
    info = setting(args, cfg, devices)
    print(json.dumps(info, indent=1), flush=True)
    label_words = (10, 20)
    params, embeds, mask, mask_onehot, labels, prompts = make_problem(args, cfg)
    f = losses_fn(cfg, label_words)
    prompt_sharding, replicated, n_dev = population_sharding(args.popsize)
    fixed = jax.device_put((params, embeds, mask, mask_onehot), replicated)
    labels_d = jax.device_put(labels, replicated)
    tag = f"bench_{args.model}" + ("" if args.layers is None else f"_L{args.layers}")
    tag += "_" + "".join(c if c.isalnum() else "-" for c in devices[0].device_kind.lower())
    rows, ref_losses, end_to_end = [], None, None
    precision = None if args.matmul_precision == "default" else args.matmul_precision

    def record(res: CaseResult):
        rows.append(res.summary(args.popsize, args.batch, args.budget))
        print(json.dumps(rows[-1]), flush=True)
        write(args, info, rows, tag)  # after every case: a timeout keeps what was measured

    for case in args.cases:
        if case == "tuning":
            with jax.default_matmul_precision(precision):
                end_to_end = run_tuning(args, cfg, params, label_words)
            print(json.dumps(end_to_end), flush=True)
            continue
        with jax.default_matmul_precision(precision):
            if case in ("population", "population_bf16"):
                bf16 = case.endswith("bf16")
                fx = to_bf16(fixed) if bf16 else fixed
                c, times, first = time_population(
                    jax.jit(f), fx, prompts.astype(jnp.bfloat16) if bf16 else prompts,
                    labels_d, args.generations, prompt_sharding,
                )
                diff = None
                if ref_losses is not None:
                    diff = float(np.abs(first - ref_losses).max())
                if not bf16:
                    ref_losses = first
                record(CaseResult(case, "bfloat16" if bf16 else "float32", n_dev,
                                  args.generations, c, times, diff))
            elif case == "loop":
                c, times, first = time_loop(
                    jax.jit(f), (params, embeds, mask, mask_onehot), prompts, labels,
                    args.loop_generations,
                )
                record(CaseResult(case, "float32", 1, args.loop_generations, c, times))
        if case == "population_fxp":
            g = jax.jit(losses_fn(cfg, label_words, dict(exact_products=not args.fxp_fast)))
            c, times, first = time_population(
                g, fixed, prompts, labels_d, args.fxp_generations, prompt_sharding
            )
            diff = None if ref_losses is None else float(np.abs(first - ref_losses).max())
            record(CaseResult(case, "fxp FM64 f=18" + (" fast" if args.fxp_fast else ""),
                              n_dev, args.fxp_generations, c, times, diff))
    by_case = {r["case"]: r for r in rows}
    if "loop" in by_case and "population" in by_case:
        info["loop_over_population"] = (
            by_case["loop"]["generation_s_median"] / by_case["population"]["generation_s_median"]
        )
    if hasattr(os, "getloadavg"):
        info["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    if "spu" in sys.modules:
        raise RuntimeError("spu was imported during the benchmark; the plaintext path must not")
    write(args, info, rows, tag, end_to_end)
    return dict(setting=info, results=rows, end_to_end=end_to_end)


def tuning_examples(cfg: ModelConfig, n: int, seq: int, rng, placeholders: int = 0):
    """n random `<s> [placeholders] t.. <mask> </s> <pad>..` examples (planted.random_batch)
    with random binary labels, as a Batch."""
    from secfwt_jax.tasks.encode import Batch
    from secfwt_jax.tasks.planted import random_batch

    ids = random_batch(cfg, n, seq, rng, placeholders=placeholders)
    return Batch(
        input_ids=ids, attention_mask=(ids != cfg.pad_token_id).astype(np.int32),
        mask_onehot=(ids == cfg.mask_token_id).astype(np.float32),
        labels=rng.integers(0, 2, n).astype(np.int32), truncated=np.zeros(n, bool),
    )


def run_tuning(args, cfg: ModelConfig, params, label_words) -> dict:
    """The tuning case: Tuner.run on the plaintext backend for the whole budget, timed end to
    end. Per-generation times come from the loop's own metrics.jsonl (cumulative wall_s)."""
    import tempfile

    from secfwt_jax.backend import make_backend
    from secfwt_jax.tuning.loop import Tuner, TuningConfig

    rng = np.random.default_rng(args.seed + 1)
    # BBT's pipeline (TuningConfig's defaults): prompt_len placeholder tokens after <s>
    train = tuning_examples(cfg, args.batch, args.seq, rng, args.prompt_len)
    dev = tuning_examples(cfg, args.dev, args.seq, rng, args.prompt_len) if args.dev else None
    tcfg = TuningConfig(
        optimizer=args.optimizer, popsize=args.popsize, intrinsic_dim=args.intrinsic_dim,
        prompt_len=args.prompt_len, budget=args.budget, eval_every=args.eval_every,
        checkpoint_every=0, seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        tuner = Tuner(tcfg, make_backend("plaintext"), cfg, params, label_words,
                      run_dir=run_dir, progress=False)
        t1 = time.perf_counter()
        summary = tuner.run(train, dev)
        t2 = time.perf_counter()
        with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
            recs = [json.loads(line) for line in fh]
    cum = np.array([r["wall_s"] for r in recs])
    per_gen = np.diff(np.concatenate([[0.0], cum]))
    dev_gen = np.array(["dev_metric" in r for r in recs])
    steady = per_gen[1:][~dev_gen[1:]]  # generation 1 holds the optimizer's compile
    with_dev = per_gen[1:][dev_gen[1:]]
    return dict(
        case="tuning", optimizer=args.optimizer, intrinsic_dim=args.intrinsic_dim,
        budget_queries=args.budget, generations=summary["generations"],
        queries=summary["queries"], dev_examples=args.dev, eval_every=args.eval_every,
        dev_checks=int(dev_gen.sum()), total_s=round(t2 - t0, 3),
        setup_s=round(t1 - t0, 3), run_s=round(t2 - t1, 3),
        loop_s=round(float(cum[-1]), 3), outside_loop_s=round(t2 - t1 - float(cum[-1]), 3),
        first_generation_s=round(float(per_gen[0]), 4),
        generation_s_median=float(np.median(steady)) if steady.size else None,
        generation_with_dev_s_median=float(np.median(with_dev)) if with_dev.size else None,
        queries_per_s=summary["queries"] / float(cum[-1]),
        final_loss=summary["final_loss"], train_acc=summary["train_acc"],
        dev_metric=summary["dev_metric"], backend_calls=summary["backend_calls"],
        extrapolated=False,
    )


def write(args, info: dict, rows: list, tag: str, end_to_end: dict | None = None) -> None:
    common.write_outputs(args.out, tag, dict(setting=info, results=rows, end_to_end=end_to_end),
                         markdown(info, rows, end_to_end), cfg=args)


def markdown(info: dict, rows: list, end_to_end: dict | None = None) -> str:
    s = info
    lines = [
        f"# Plaintext evaluator throughput: {s['model']} ({s['layers']} layers), "
        f"{s['device_kind']}",
        "",
        f"Command: `{s['command']}`  ",
        f"Date: {s['date']}; host {s['host']} ({s['cpu_count']} CPUs); {s['devices']} "
        f"{s['platform']} device(s): {s['device_kind']}; load average (1 min) "
        f"{s.get('load_avg_1min_at_start')} at start, {s.get('load_avg_1min_at_end')} at end  ",
        f"jax {s['jax']}, jaxlib {s['jaxlib']}, flax {s['flax']}, Python {s['python']}  ",
        f"Model: {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, intermediate "
        f"{s['intermediate']}, vocab {s['vocab']}, {s['attention']} attention, "
        f"{s['activation']}; weights {s['weights']}  ",
        f"Batch {s['batch']} examples x (seq {s['seq']} + {s['prompt_len']} prompt tokens = "
        f"{s['total_seq']}); lambda = {s['popsize']} candidates per generation; budget "
        f"{s['budget_queries']} queries = {s['budget_queries'] // s['popsize']} generations; "
        f"float32 matmul precision: {s['matmul_precision']}",
        "",
        "| case | dtype | devices | compile s | s / generation | queries / s | sequences / s "
        "| budget s | budget s + compile | timed gens | max loss diff vs f32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if not rows:  # the tuning case alone: no per-case table
        lines = lines[:-3]
    for r in rows:
        diff = r["max_loss_diff_vs_float32"]
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['devices']} | {r['compile_s']:.1f} | "
            f"{r['generation_s_median']:.4g} | {r['queries_per_s']:.4g} | "
            f"{r['sequences_per_s']:.4g} | {r['budget_s']:.4g} | "
            f"{r['budget_s_with_compile']:.4g} | {r['timed_generations']} | "
            f"{'-' if diff is None else f'{diff:.2e}'} |"
        )
    lines.append("")
    if any(r["budget_extrapolated"] for r in rows):
        lines.append(
            "Budget times are extrapolated: (budget / lambda) generations x the median measured "
            "time of one generation (timed gens column); compile time is the first call."
        )
    if "loop_over_population" in s:
        lines.append(
            f"Python loop over candidates / one population call: "
            f"{s['loop_over_population']:.2f}x the time per generation."
        )
    if rows:
        lines.append(
            "Timed: the evaluator only (prompts already on the device, embeddings computed "
            "once); CMA-ES ask/tell and the projection z -> prompt are not included."
        )
    if end_to_end is not None:
        e = end_to_end
        gen = e["generation_s_median"]
        dev = e["generation_with_dev_s_median"]
        lines += [
            "",
            f"## End-to-end tuning run (plaintext, not extrapolated): {e['optimizer']}, d = "
            f"{e['intrinsic_dim']}",
            "",
            "| queries | generations | dev checks | total s | setup s | loop s | outside loop s "
            "| generation 1 s | s / generation | s / generation with dev check | queries / s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {e['queries']} | {e['generations']} | {e['dev_checks']} | {e['total_s']:.4g} | "
            f"{e['setup_s']:.4g} | {e['loop_s']:.4g} | {e['outside_loop_s']:.4g} | "
            f"{e['first_generation_s']:.4g} | {'-' if gen is None else f'{gen:.4g}'} | "
            f"{'-' if dev is None else f'{dev:.4g}'} | {e['queries_per_s']:.4g} |",
            "",
            "Timed: secfwt_jax.tuning.loop.Tuner on the plaintext backend (setup: projection, "
            "optimizer, evaluator; run: sharing the examples, the zero-prompt train evaluation, "
            f"every generation's ask, projection, evaluator call and tell, {e['dev_examples']} "
            "dev examples: BBT's check of the candidate of every eval_every-th call, the final "
            "train evaluation; compile times included, generation 1 holds the optimizer's). Random "
            f"examples and labels (a timing run): final loss {e['final_loss']:.4f}, train "
            f"accuracy {e['train_acc']:.3f}.",
        ]
    return "\n".join(lines) + "\n"


@common.hydra_app(Config, "bench_simulation")
def main(cfg) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
