"""Our jitted CMA-ES against pycma: wall time per generation (ask + tell) and search quality.

Speed: at each dimension d (default 500 and 1000; popsize 20, sphere from x0 = 1, sigma0 = 1)
each of our variants (``variants``: ``cmaes``, pycma's algorithm, and ``cmaes_cholesky``, the
same with a Cholesky factor of C) and pycma run blocks of ``--generations`` generations,
interleaved in one process (the order rotated every repeat) so that the load of other jobs on a
shared machine falls on all alike. A block's time is the sum of its ask and tell times only: the
objective is evaluated outside the timers, and ours is compiled before the first block (the
compile time is reported on its own). ``--generations`` should be a multiple of both lazy
eigendecomposition intervals (ours: ``CMAESParams.eigen_interval``; pycma: its
``lazy_update_gap`` rounded up, the same rule), so that every block holds the same number of
O(n^3) decompositions. Reported: per-generation time = block time / generations, median over
``--repeats`` blocks, and the median of the paired ratios pycma / ours; plus where the time
goes (ours: ask, a tell without and with an eigendecomposition; pycma: ask, tell, and the asks
that decompose, since pycma decomposes in ask).

Quality: evaluations to reach f < 1e-8 on the sphere at d in ``--quality-dims`` (default 100 and
200, where the lazy interval is 2 and 3), ``--seeds`` seeds each, for each variant with the lazy
default, ``cmaes`` decomposing in every tell (``eigen_interval=1``, the former behaviour) and
pycma (float64, its defaults, default popsize).

From the repository root (CPU; a few minutes):
    python experiments/bench_optimizer.py
    python experiments/bench_optimizer.py --threads 1     # both sides on one thread
Writes results/optimizer/bench_optimizer[_threads<N>].json and .md (setting, command, load).
``--threads N`` sets OPENBLAS/OMP/MKL_NUM_THREADS (pycma's numpy and the LAPACK behind our eigh)
and XLA's CPU intra-op threads before numpy and jax are imported: on a machine oversubscribed by
other jobs, spinning BLAS threads distort both sides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time

import common

THREADS = common.peek_argument("threads")  # read before numpy/jax are imported (at import)
THREADS = None if THREADS in (None, "null") else int(THREADS)
if THREADS is not None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(THREADS)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                               f"{'true' if THREADS > 1 else 'false'} "
                               f"intra_op_parallelism_threads={THREADS}").strip()

import cma  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from secfwt_jax.config import check_choice  # noqa: E402
from secfwt_jax.tuning import make_optimizer  # noqa: E402


@dataclasses.dataclass
class Config(common.AppConfig):
    """The benchmark's settings (legacy form: --threads 1 --generations 20 --quality-dims)."""

    dims: list[int] = dataclasses.field(default_factory=lambda: [500, 1000])
    # our variants timed against pycma in the same run (secfwt_jax.tuning.OPTIMIZERS names)
    variants: list[str] = dataclasses.field(default_factory=lambda: ["cmaes", "cmaes_cholesky"])
    popsize: int = 20
    generations: int = 30  # generations per timed block
    repeats: int = 7  # timed blocks per optimizer and d
    quality_dims: list[int] = dataclasses.field(default_factory=lambda: [100, 200])
    seeds: int = 5
    threads: int | None = None  # BLAS and XLA CPU threads for both sides (None: the libraries')
    out: str = "results/optimizer"
    # how the machine was used while this ran (written into the record as given)
    machine: str = "one 2-core machine shared with other jobs"


def sphere_np(x: np.ndarray) -> float:
    return float(np.dot(x, x))


class Ours:
    """Our CMA-ES variant ``name`` driven exactly as tuning/loop.py drives it: jax.jit(ask),
    jax.jit(tell)."""

    def __init__(self, d: int, popsize: int, name: str):
        self.opt = make_optimizer(name, dim=d, popsize=popsize, sigma0=1.0)
        self.state = self.opt.init(jax.random.PRNGKey(0), jnp.ones(d))
        t0 = time.perf_counter()
        self.ask = jax.jit(self.opt.ask).lower(self.state).compile()
        z, s = self.ask(self.state)
        f_shape = jax.ShapeDtypeStruct((popsize,), jnp.float32)
        self.tell = jax.jit(self.opt.tell).lower(s, z, f_shape).compile()
        self.compile_s = time.perf_counter() - t0
        self.f = jax.jit(lambda z: jnp.sum(z * z, axis=1))

    def block(self, generations: int) -> dict:
        ask_t, tell_plain, tell_eigen = [], [], []
        s = self.state
        for _ in range(generations):
            t0 = time.perf_counter()
            z, s = self.ask(s)
            jax.block_until_ready((z, s))
            t1 = time.perf_counter()
            f = jax.block_until_ready(self.f(z))  # objective: outside the timers
            t2 = time.perf_counter()
            before = int(s.eigen_generation)
            s = jax.block_until_ready(self.tell(s, z, f))
            t3 = time.perf_counter()
            ask_t.append(t1 - t0)
            (tell_eigen if int(s.eigen_generation) != before else tell_plain).append(t3 - t2)
        self.state = s
        return {"total_s": sum(ask_t) + sum(tell_plain) + sum(tell_eigen), "ask": ask_t,
                "tell_plain": tell_plain, "tell_eigen": tell_eigen}


class Pycma:
    def __init__(self, d: int, popsize: int):
        self.es = cma.CMAEvolutionStrategy(
            np.ones(d), 1.0, {"verbose": -9, "seed": 1, "popsize": popsize}
        )

    def block(self, generations: int) -> dict:
        ask_plain, ask_eigen, tell_t = [], [], []
        es = self.es
        for _ in range(generations):
            before = es.sm.last_update
            t0 = time.perf_counter()
            X = es.ask()
            t1 = time.perf_counter()
            F = [sphere_np(x) for x in X]  # objective: outside the timers
            t2 = time.perf_counter()
            es.tell(X, F)
            t3 = time.perf_counter()
            (ask_eigen if es.sm.last_update != before else ask_plain).append(t1 - t0)
            tell_t.append(t3 - t2)
        return {"total_s": sum(ask_plain) + sum(ask_eigen) + sum(tell_t), "ask_plain": ask_plain,
                "ask_eigen": ask_eigen, "tell": tell_t}


def med_ms(xs):
    return round(1e3 * float(np.median(xs)), 3) if xs else None


def speed(d: int, args) -> dict:
    ours = {v: Ours(d, args.popsize, v) for v in args.variants}
    ref = Pycma(d, args.popsize)
    gap = ref.es.sm.lazy_update_gap
    runners = [*ours.items(), ("pycma", ref)]
    for _, o in runners:  # warm-up, untimed
        o.block(args.generations)
    blocks = {name: [] for name, _ in runners}
    for r in range(args.repeats):  # rotate which goes first
        k = r % len(runners)
        for name, o in runners[k:] + runners[:k]:
            blocks[name].append(o.block(args.generations))
    per_gen = {k: [b["total_s"] / args.generations for b in v] for k, v in blocks.items()}

    def cat(name, key):
        return [t for b in blocks[name] for t in b[key]]

    def composed(plain, eig, rest, every):
        """Per-call medians composed: plain call + extra of a decomposing call / interval."""
        p_med = float(np.median(plain)) if plain else float(np.median(eig))
        e_med = float(np.median(eig)) if eig else p_med
        return 1e3 * (float(np.median(rest)) + p_med + (e_med - p_med) / every)

    ref_c = composed(cat("pycma", "ask_plain"), cat("pycma", "ask_eigen"), cat("pycma", "tell"),
                     max(1, math.ceil(gap)))
    variants = {}
    for v, o in ours.items():
        ratios = [p / t for p, t in zip(per_gen["pycma"], per_gen[v])]
        c = composed(cat(v, "tell_plain"), cat(v, "tell_eigen"), cat(v, "ask"),
                     o.opt.params.eigen_interval)
        variants[v] = {
            "eigen_interval": o.opt.params.eigen_interval,
            "compile_s": round(o.compile_s, 3),
            "ms_per_generation": [round(1e3 * t, 3) for t in per_gen[v]],
            "median_ms": med_ms(per_gen[v]),
            "speedup_paired_median": round(float(np.median(ratios)), 3),
            "speedup_paired": [round(x, 3) for x in ratios],
            # robust to load spikes: medians of single calls, factorising calls / interval
            "composed_ms": round(c, 3),
            "speedup_composed": round(ref_c / c, 3),
            "breakdown_median_ms": {
                "ask": med_ms(cat(v, "ask")),
                "tell_without_factorisation": med_ms(cat(v, "tell_plain")),
                "tell_with_factorisation": med_ms(cat(v, "tell_eigen")),
                "factorising_tells": len(cat(v, "tell_eigen")),
            },
        }
    return {
        "dim": d,
        "popsize": args.popsize,
        "lazy_update_gap_pycma": gap,
        "pycma_ms_per_generation": [round(1e3 * t, 3) for t in per_gen["pycma"]],
        "pycma_median_ms": med_ms(per_gen["pycma"]),
        "pycma_composed_ms": round(ref_c, 3),
        "pycma_breakdown_median_ms": {
            "ask_without_eigh": med_ms(cat("pycma", "ask_plain")),
            "ask_with_eigh": med_ms(cat("pycma", "ask_eigen")),
            "eigh_asks": len(cat("pycma", "ask_eigen")),
            "tell": med_ms(cat("pycma", "tell")),
        },
        "variants": variants,
    }


def ours_evals(d: int, seeds: int, max_generations: int, name: str = "cmaes",
               **kw) -> np.ndarray:
    """Evaluations each seed needs to reach sphere < 1e-8 (inf past max_generations)."""
    opt = make_optimizer(name, dim=d, sigma0=1.0, **kw)

    def run(key):
        def cond(c):
            return ~c[1] & (c[0].generation < max_generations)

        def body(c):
            z, s = opt.ask(c[0])
            s = opt.tell(s, z, jnp.sum(z * z, axis=1))
            return s, s.best_f < 1e-8

        s, done = jax.lax.while_loop(cond, body, (opt.init(key, jnp.ones(d)), jnp.array(False)))
        return s.generation, done

    # seeds one after another (not vmapped), so lax.cond skips the eigendecompositions
    out = []
    for k in jax.random.split(jax.random.PRNGKey(0), seeds):
        g, done = jax.jit(run)(k)
        out.append(float(g) * opt.popsize if bool(done) else math.inf)
    return np.asarray(out), opt.params.eigen_interval


def pycma_evals(d: int, seeds: int) -> np.ndarray:
    out = []
    for seed in range(1, seeds + 1):
        es = cma.CMAEvolutionStrategy(np.ones(d), 1.0, {"verbose": -9, "seed": seed})
        evals, best = 0, math.inf
        while best >= 1e-8 and not es.stop():
            X = es.ask()
            F = [sphere_np(x) for x in X]
            es.tell(X, F)
            evals += len(X)
            best = min(best, min(F))
        out.append(evals if best < 1e-8 else math.inf)
    return np.asarray(out, np.float64)


def quality(d: int, seeds: int, variants: list[str]) -> dict:
    ref = pycma_evals(d, seeds)
    cap = math.ceil(3 * np.median(ref) / make_optimizer("cmaes", dim=d).popsize)
    evals = {}
    for v in variants:
        evals[v], interval = ours_evals(d, seeds, cap, name=v)
    evals["cmaes, eigh every generation"], _ = ours_evals(d, seeds, cap, eigen_interval=1)
    return {
        "dim": d, "problem": "sphere, x0 = 1, sigma0 = 1, target f < 1e-8", "seeds": seeds,
        "eigen_interval_lazy": interval, "pycma_evals": ref.tolist(),
        "ours_evals": {k: v.tolist() for k, v in evals.items()},
        "median": {"pycma": float(np.median(ref)),
                   **{k: float(np.median(v)) for k, v in evals.items()}},
    }


def markdown(rec: dict) -> str:
    st = rec["setting"]
    lines = [
        "# CMA-ES per-generation time: ours (jitted, float32, lazy factorisation) vs pycma",
        "",
        f"Command: `{rec['command']}`",
        "",
        f"Setting: {st['machine']}. CPU cores: {st['cpu_count']}; load average at start "
        f"{st['loadavg_start']}, at end {st['loadavg_end']}; threads: {st['threads']}; jax "
        f"{st['jax']}, cma {st['cma']}, numpy {st['numpy']}. Every optimizer ran interleaved "
        "in one process (blocks rotated), so the ratios compare like with like.",
        "",
        *common.markdown_table(
            ["d", "lambda", "ours", "ours ms/gen", "pycma ms/gen", "pycma / ours (paired median)",
             "ours compile s", "factorise every (ours / pycma gap)",
             "composed: ours / pycma ms, ratio"],
            [[s["dim"], s["popsize"], v, o["median_ms"], s["pycma_median_ms"],
              f"{o['speedup_paired_median']}x", o["compile_s"],
              f"{o['eigen_interval']} / {s['lazy_update_gap_pycma']:.2f}",
              f"{o['composed_ms']} / {s['pycma_composed_ms']}, {o['speedup_composed']}x"]
             for s in rec["speed"] for v, o in s["variants"].items()]),
        "", "ms/gen: a block's ask + tell time / its generations, median over blocks; "
        "the paired ratio is the median of per-repeat ratios (blocks of the same repeat). "
        "Composed: median single calls, a factorising call weighted by 1 / interval (robust to "
        "load spikes that hit a whole block).", "",
        "Where the time goes (median ms per call):", "",
    ]
    lines += common.markdown_table(
        ["d", "ours", "ask", "tell", "tell with factorisation", "pycma ask",
         "pycma ask with eigh", "pycma tell"],
        [[s["dim"], v, o["breakdown_median_ms"]["ask"],
          o["breakdown_median_ms"]["tell_without_factorisation"],
          o["breakdown_median_ms"]["tell_with_factorisation"],
          s["pycma_breakdown_median_ms"]["ask_without_eigh"],
          s["pycma_breakdown_median_ms"]["ask_with_eigh"], s["pycma_breakdown_median_ms"]["tell"]]
         for s in rec["speed"] for v, o in s["variants"].items()])
    if rec["quality"]:
        names = list(rec["quality"][0]["median"])
        lines += ["", "Search quality: evaluations to sphere < 1e-8 (median over seeds):", ""]
        lines += common.markdown_table(
            ["d", "factorise every (lazy)", *names],
            [[q["dim"], q["eigen_interval_lazy"], *(q["median"][k] for k in names)]
             for q in rec["quality"]])
    return "\n".join(lines) + "\n"


@common.hydra_app(Config, "bench_optimizer")
def main(args) -> None:
    load0 = os.getloadavg()
    speed_rows, qual = [], []
    for v in args.variants:  # the full CMA-ES variants (their states count factorisations)
        check_choice("variant", v, ("cmaes", "cmaes_cholesky"))
    for d in args.dims:
        speed_rows.append(speed(d, args))
        print(json.dumps({v: o["speedup_paired_median"]
                          for v, o in speed_rows[-1]["variants"].items()}), flush=True)
    for d in args.quality_dims:
        qual.append(quality(d, args.seeds, list(args.variants)))
        print(json.dumps(qual[-1]["median"]), flush=True)
    rec = {
        "command": common.command_line(),
        "setting": {
            "machine": args.machine,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "jax": jax.__version__, "cma": cma.__version__, "numpy": np.__version__,
            "generations_per_block": args.generations, "repeats": args.repeats,
            "objective": "sphere, evaluated outside the timers",
            "threads": args.threads or "library defaults",
        },
        "speed": speed_rows,
        "quality": qual,
    }
    tag = "bench_optimizer" + ("" if args.threads is None else f"_threads{args.threads}")
    common.write_outputs(args.out, tag, rec, markdown(rec), cfg=args)
    print(markdown(rec))


if __name__ == "__main__":
    main()
