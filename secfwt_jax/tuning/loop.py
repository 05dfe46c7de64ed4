"""The forward-only tuning loop (SecFwT / Black-Box Tuning), on the data owner's side.

Per generation: ask P candidates z (P, d); prompts = z @ A (+ p0), (P, L, H); one backend call
evaluates all P x B sequences and reveals only the verbalizer logits (or only the P losses);
the loss is computed in plaintext; tell. Model selection on dev (`selection`): Black-Box
Tuning's rule ("bbt": every `eval_every` calls, the candidate evaluated at that call, kept when
strictly better) or ours ("best_train": every `eval_every` generations, the optimizer's best
point so far); early stopping; a final test metric. A checkpoint every
`checkpoint_every` generations: a run killed and resumed ends in the state an uninterrupted run
with the same seed reaches (exactly on the plaintext backend; under MPC the losses carry
fixed-point noise that differs between runs, see docs).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..backend.common import Handle
from ..tasks.metrics import accuracy
from .evaluator import VOCAB_BUCKET, PromptEvaluator
from .optimizers import make_optimizer
from .projection import embedding_std, make_projection, prompts_from_z
from .records import append_jsonl, load_run, save_run, truncate_jsonl
from .similarity_evaluator import SimilarityEvaluator

HEADS = ("mlm", "similarity")


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """Hyper-parameters of one forward-only tuning run (defaults: Black-Box Tuning's).

    budget: forward queries = popsize x generations (BBT: 8000). selection: "bbt" or
    "best_train" (SELECTIONS, see `select_on_dev`). eval_every: calls (forward queries of single
    candidates) between dev evaluations for selection "bbt" (BBT: 100), generations for
    "best_train"; checkpoint_every: in generations (0 = never). patience: dev evaluations
    without improvement before stopping (0 = no early stopping). loss, projection, prompt_mode:
    see PromptEvaluator, make_projection and secfwt_jax.model (defaults: BBT's hinge, uniform
    A, add after the LayerNorm); sigma0: CMA-ES's initial step (BBT's bbt.py: 0.5).
    vocab_bucket: the secure embedding lookup's sub-vocabulary rounding (PromptEvaluator; 0:
    whole-vocabulary one-hot, nothing but shapes revealed).
    head: "mlm" (label-word logits at <mask>) or "similarity" (cosine to label descriptions
    divided by `temperature`, secfwt_jax.similarity; for encoders without an MLM head).
    """

    optimizer: str = "cmaes"
    popsize: int = 20
    intrinsic_dim: int = 500
    prompt_len: int = 50
    prompt_mode: str = "add"
    projection: str = "uniform"
    sigma0: float = 0.5
    budget: int = 8000
    loss: str = "hinge"
    reveal: str = "logits"
    selection: str = "bbt"
    eval_every: int = 100
    patience: int = 0
    checkpoint_every: int = 10
    seed: int = 0
    vocab_bucket: int = VOCAB_BUCKET
    head: str = "mlm"
    temperature: float = 0.05

    @property
    def generations(self) -> int:
        return self.budget // self.popsize

    def __post_init__(self):
        from ..config import PROMPT_MODES, check_choice
        from .evaluator import LOSSES, REVEALS
        from .optimizers import OPTIMIZERS
        from .projection import PROJECTIONS

        check_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        check_choice("loss", self.loss, LOSSES)
        check_choice("reveal", self.reveal, REVEALS)
        check_choice("prompt_mode", self.prompt_mode, PROMPT_MODES)
        check_choice("projection", self.projection, PROJECTIONS)
        for name, low in INT_MINIMA:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.sigma0, int | float) and np.isfinite(self.sigma0)
                and self.sigma0 > 0):
            raise ValueError(f"sigma0 must be a finite number > 0, got {self.sigma0!r}")
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("head", self.head, HEADS)
        if self.budget < self.popsize:
            raise ValueError(
                f"budget {self.budget} is smaller than one generation (popsize {self.popsize})"
            )


# Integer settings and their smallest accepted values (0 = "never" for the *_every keys and
# patience; seeds are non-negative as numpy's generators require).
INT_MINIMA = (("popsize", 1), ("intrinsic_dim", 1), ("prompt_len", 1), ("budget", 1),
               ("eval_every", 0), ("patience", 0), ("checkpoint_every", 0), ("seed", 0),
               ("vocab_bucket", 0))


class NonFiniteLossError(FloatingPointError):
    """A candidate's loss or revealed logits are NaN or infinite (the checkpoint of the last
    whole generation was written first)."""


SELECTIONS = ("bbt", "best_train")


def bbt_dev_calls(generation: int, popsize: int, every: int) -> list[int]:
    """Indices (within the generation's P candidates) of the candidates BBT evaluates on dev.

    BBT (bbt.py, LMForwardAPI.eval) counts calls, one per candidate (serial evaluation of
    es.ask()'s popsize solutions), and evaluates the current candidate on dev when
    `num_call % eval_every == 0`. Generation g (1-based) holds calls (g-1)P+1 .. gP.
    """
    first = (generation - 1) * popsize + 1
    return [call - first for call in range(first, first + popsize) if every and call % every == 0]


def select_on_dev(best: float | None, metric: float) -> bool:
    """BBT's rule: keep a dev metric only when strictly greater than the best so far, which
    starts at 0.0 (`self.best_dev_perf = 0.0`), so a dev metric of 0 is never kept."""
    return metric > (0.0 if best is None else best)


def tuning_projection(cfg: TuningConfig, model_config, params=None,
                      embed_std: float | None = None) -> jax.Array:
    """The data owner's fixed random projection A (d, L*H) for this run's seed (BBT Sec. 3.2).

    A never leaves the data owner; the servers only ever see prompts z @ A. projection="normal"
    needs the word-embedding std: `embed_std` as the model owner publishes it
    (principals.ModelDisclosure), else computed from plaintext `params` (tests, plaintext).
    """
    key_a = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]
    std = None
    if cfg.projection == "normal":
        if embed_std is None and (params is None or isinstance(params, Handle)):
            raise ValueError("projection 'normal' needs embed_std (the model owner's declared "
                             "disclosure) when the weights are not given in plaintext")
        std = embedding_std(params["word_embeddings"]) if embed_std is None else embed_std
    return make_projection(
        key_a, cfg.intrinsic_dim, cfg.prompt_len, model_config.hidden_size,
        kind=cfg.projection, sigma0=cfg.sigma0, embed_std=std,
    )


class Tuner:
    """Runs `TuningConfig` on a backend for one task's example sets.

    metric_fn(preds, labels) -> dict of metrics, main_metric the key used for model selection.
    params: the weights as a backend Handle (already shared by the model owner; then embed_std,
    the model owner's published word-embedding std, is needed for projection="normal") or as
    plaintext arrays (shared here; tests and plaintext runs). principals.DataOwner passes a Handle.
    With cfg.head "similarity", label_word_ids is not used (pass None) and descriptions is the
    Batch of label descriptions (secfwt_jax.tasks.sentences.encode_descriptions).
    """

    def __init__(
        self, cfg: TuningConfig, backend, model_config, params, label_word_ids, *,
        metric_fn=None, main_metric: str = "accuracy", run_dir: str | None = None,
        progress: bool = True, embed_std: float | None = None, descriptions=None,
    ):
        self.cfg, self.backend, self.model_config = cfg, backend, model_config
        self.metric_fn = metric_fn or (lambda p, y: {"accuracy": accuracy(p, y)})
        self.main_metric, self.run_dir, self.progress = main_metric, run_dir, progress
        self.key_opt = jax.random.split(jax.random.PRNGKey(cfg.seed))[1]
        self.A = tuning_projection(cfg, model_config, params, embed_std)
        self.opt = make_optimizer(
            cfg.optimizer, dim=cfg.intrinsic_dim, popsize=cfg.popsize, sigma0=cfg.sigma0
        )
        self._ask, self._tell = jax.jit(self.opt.ask), jax.jit(self.opt.tell)
        self.params_handle = (params if isinstance(params, Handle)
                              else backend.put(params, owner="model"))
        options = dict(
            prompt_len=cfg.prompt_len, prompt_mode=cfg.prompt_mode, loss=cfg.loss,
            reveal=cfg.reveal, vocab_bucket=cfg.vocab_bucket,
        )
        if cfg.head == "similarity":
            if descriptions is None:
                raise ValueError("head 'similarity' needs the label descriptions (descriptions=)")
            self.evaluator = SimilarityEvaluator(
                backend, model_config, self.params_handle, descriptions,
                temperature=cfg.temperature, **options)
        else:
            self.evaluator = PromptEvaluator(
                backend, model_config, self.params_handle, label_word_ids, **options)

    # -- helpers --------------------------------------------------------------------------

    def prompts(self, z) -> np.ndarray:
        """(P, L, H) soft prompts of candidates z (P, d)."""
        return np.asarray(prompts_from_z(jnp.asarray(z), self.A, prompt_len=self.cfg.prompt_len))

    def evaluate(self, example_sets, z) -> dict:
        """Metrics of the prompt of z (d,) over a list of shared example sets."""
        prompt = self.prompts(np.asarray(z)[None])[0]
        preds = np.concatenate([self.evaluator.predict(s, prompt) for s in example_sets])
        labels = np.concatenate([s.labels for s in example_sets])
        return self.metric_fn(preds, labels)

    def _path(self, name):
        return None if self.run_dir is None else os.path.join(self.run_dir, name)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, train, dev=None, test=None, resume: bool = True, stop_after: int | None = None):
        """Tune on `train`; select on `dev`; report on `test` (Batches; test may be a list of
        Batches, shared chunk by chunk). Returns the summary dict.

        stop_after: end the process-level loop after this many generations of this call
        without finishing (used to test kill-and-resume); the checkpoint is written first.
        """
        cfg = self.cfg
        t0 = time.perf_counter()
        if self.run_dir:
            os.makedirs(self.run_dir, exist_ok=True)
        train_set = self.evaluator.share_examples(train)
        dev_sets = [self.evaluator.share_examples(dev)] if dev is not None else []
        state = self.opt.init(self.key_opt, jnp.zeros(cfg.intrinsic_dim, jnp.float32))
        loop = dict(generation=0, best_dev=None, best_dev_z=None, evals_since_best=0,
                    bytes_total=0, wall_s=0.0, stopped_early=False)
        zero = np.zeros(cfg.intrinsic_dim, np.float32)
        initial_train = self.evaluate([train_set], zero)
        ck = self._path("checkpoint")
        if resume and ck and (os.path.exists(ck) or os.path.exists(ck + ".old")):
            state, loop = load_run(ck, like=state)
        # lines after the checkpoint (or, starting afresh, all lines) belong to no run now
        truncate_jsonl(self._path("metrics.jsonl"), loop["generation"])
        bytes_before = self.evaluator.bytes_total - loop["bytes_total"]
        wall_before = time.perf_counter() - loop["wall_s"]
        bar = _progress(cfg.generations, loop["generation"], self.progress)
        eta = SteadyEta()
        done_here = 0
        while loop["generation"] < cfg.generations and not loop["stopped_early"]:
            before = state
            z, state = self._ask(state)
            losses, logits = self.evaluator.losses(train_set, self.prompts(np.asarray(z)))
            bad = _non_finite_candidates(losses, logits)
            if bad:
                if ck:
                    save_run(ck, before, loop)
                bar.close()
                raise NonFiniteLossError(
                    f"generation {loop['generation'] + 1}: non-finite loss or logits for "
                    f"candidate(s) {bad} of {len(losses)} (losses {np.asarray(losses).tolist()}); "
                    f"the run stopped after saving the checkpoint of generation "
                    f"{loop['generation']}" + (f" in {ck}" if ck else " (no run directory)")
                )
            state = self._tell(state, z, jnp.asarray(losses, jnp.float32))
            loop["generation"] += 1
            gen = loop["generation"]
            rec = dict(
                generation=gen, queries=gen * cfg.popsize, loss=float(np.mean(losses)),
                min_loss=float(np.min(losses)), best_loss=float(state.best_f),
            )
            last = gen == cfg.generations
            if dev_sets and cfg.selection == "bbt":
                for i in bbt_dev_calls(gen, cfg.popsize, cfg.eval_every):
                    metric = self.evaluate(dev_sets, np.asarray(z)[i])[self.main_metric]
                    rec["dev_metric"], rec["dev_call"] = metric, (gen - 1) * cfg.popsize + i + 1
                    if select_on_dev(loop["best_dev"], metric):
                        loop["best_dev"], loop["best_dev_z"] = metric, np.asarray(z)[i].tolist()
                        loop["evals_since_best"] = 0
                    else:
                        loop["evals_since_best"] += 1
                        if cfg.patience and loop["evals_since_best"] >= cfg.patience:
                            loop["stopped_early"] = True
            elif dev_sets and cfg.eval_every and (gen % cfg.eval_every == 0 or last):
                metric = self.evaluate(dev_sets, state.best_x)[self.main_metric]
                rec["dev_metric"] = metric
                if loop["best_dev"] is None or metric > loop["best_dev"]:
                    loop["best_dev"], loop["best_dev_z"] = metric, np.asarray(state.best_x).tolist()
                    loop["evals_since_best"] = 0
                else:
                    loop["evals_since_best"] += 1
                    if cfg.patience and loop["evals_since_best"] >= cfg.patience:
                        loop["stopped_early"] = True
            loop["bytes_total"] = self.evaluator.bytes_total - bytes_before
            loop["wall_s"] = time.perf_counter() - wall_before
            rec.update(bytes_total=loop["bytes_total"], wall_s=round(loop["wall_s"], 4))
            append_jsonl(self._path("metrics.jsonl"), rec)
            bar.update(1)
            eta.step()
            bar.set_postfix(loss=f"{rec['loss']:.4f}", dev=rec.get("dev_metric", loop["best_dev"]),
                            MB=f"{loop['bytes_total'] / 1e6:.1f}",
                            eta=eta.text(cfg.generations - loop["generation"]))
            if ck and cfg.checkpoint_every and (gen % cfg.checkpoint_every == 0 or last):
                save_run(ck, state, loop)
            done_here += 1
            if stop_after is not None and done_here >= stop_after:
                bar.close()
                return None
        bar.close()
        selected = "dev" if loop["best_dev_z"] is not None else "best_train"
        if selected != "dev" and dev_sets:
            # BBT would test best_prompt=None and fail; we test the best training point and say so
            warnings.warn("no dev evaluation selected a candidate (none ran, or none beat 0.0); "
                          "testing the optimizer's best training point", stacklevel=2)
        final_z = np.asarray(loop["best_dev_z"] if selected == "dev" else state.best_x)
        train_metrics = self.evaluate([train_set], final_z)
        summary: dict[str, Any] = dict(
            generations=loop["generation"], queries=loop["generation"] * cfg.popsize,
            final_loss=float(state.best_f), initial_train_acc=initial_train["accuracy"],
            train_acc=train_metrics["accuracy"], dev_metric=loop["best_dev"], selected=selected,
            stopped_early=loop["stopped_early"],
        )
        if test is not None:
            chunks = test if isinstance(test, list | tuple) else [test]
            test_sets = [self.evaluator.share_examples(c) for c in chunks]
            summary["test_metrics"] = self.evaluate(test_sets, final_z)
            summary["test_metric"] = summary["test_metrics"][self.main_metric]
        else:
            summary["test_metric"] = None
        summary.update(
            bytes_total=self.evaluator.bytes_total - bytes_before,
            bytes_tuning=loop["bytes_total"], wall_s=round(time.perf_counter() - t0, 3),
            backend_calls=self.evaluator.calls, best_z=final_z.tolist(),
        )
        self.final_state = state
        return summary


def _non_finite_candidates(losses, logits) -> list[int]:
    """Indices of the candidates whose loss, or any of whose (B, C) logits, is NaN or inf."""
    bad = ~np.isfinite(np.asarray(losses, np.float64))
    if logits is not None:
        lg = np.asarray(logits, np.float64)
        bad |= ~np.isfinite(lg.reshape(lg.shape[0], -1)).all(axis=1)
    return np.flatnonzero(bad).tolist()


class SteadyEta:
    """Time left from steady-state generations: the first generation of a process (which
    compiles the programs, and on a resumed run is the only slow one) is left out."""

    def __init__(self, clock=time.perf_counter):
        self.clock, self.times = clock, [clock()]

    def step(self) -> None:
        self.times.append(self.clock())

    def seconds(self, remaining: int) -> float | None:
        """Estimated seconds for `remaining` generations; None before two have run."""
        steady = np.diff(self.times)[1:]
        return float(np.mean(steady) * remaining) if len(steady) else None

    def text(self, remaining: int) -> str:
        s = self.seconds(remaining)
        if s is None:
            return "?"
        return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"


def _progress(total, initial, enabled):
    from tqdm.auto import tqdm

    # tqdm's own remaining-time estimate would count the first (compiling) step; SteadyEta's
    # is shown in the postfix instead
    return tqdm(total=total, initial=initial, disable=not enabled, unit="gen", desc="tuning",
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
