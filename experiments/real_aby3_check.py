"""ABY3 against plaintext_fxp on the real checkpoint with the similarity head (issue 14).

A short tuning run on plaintext_fxp (SPU's fixed point emulated; seed-fixed, 2 generations of
4 candidates) gives a tuned prompt. Then the same candidate prompts (z = 0, the tuned z, and two
seeded random z, through the run's BBT projection) are scored on the same SST-2 training
examples, and z = 0 and the tuned z on test sentences, under ABY3 (SPU, 3 simulated parties,
FM64) and under plaintext_fxp: the largest absolute difference of the (P, B, C) scores (cosine /
temperature), and the training loss and test accuracy of the zero and the tuned prompt on
each backend (does the accuracy move the same way?).

Small by design (SPU's simulator of a 6-layer model on a shared 2-core machine): a few
training and test sentences, truncated to max_len tokens.

    python experiments/real_aby3_check.py --out results/real_tuning/aby3_check.json
"""

from __future__ import annotations

import dataclasses
import json
import time

import common
import jax.numpy as jnp
import numpy as np

from secfwt_jax.backend import make_backend
from secfwt_jax.loading import load_pretrained, package_checkpoint_dir
from secfwt_jax.tasks import load_split
from secfwt_jax.tasks.sentences import encode_descriptions, encode_sentences
from secfwt_jax.tuning.evaluator import candidate_losses
from secfwt_jax.tuning.loop import Tuner, TuningConfig, tuning_projection
from secfwt_jax.tuning.projection import prompts_from_z
from secfwt_jax.tuning.similarity_evaluator import SimilarityEvaluator

METHOD = dict(attention="softmax_puma", activation="gelu_puma")  # method=fot_puma


@dataclasses.dataclass
class Config(common.AppConfig):
    """The check's settings (legacy form: --out results/real_tuning/aby3_check.json)."""

    n_train: int = 8
    n_test: int = 16
    max_len: int = 24
    seed: int = 13
    out: str = "results/real_tuning/aby3_check.json"  # the record (a file, not a folder)


@common.hydra_app(Config, "real_aby3_check")
def main(args):
    from transformers import AutoTokenizer

    directory = package_checkpoint_dir()
    model, params = load_pretrained(directory, **METHOD)
    config = model.config
    tok = AutoTokenizer.from_pretrained(directory)
    train_all = load_split("sst2", None, "train", seed=args.seed)
    rng = np.random.default_rng(args.seed)
    pick = rng.permutation(len(train_all))[:args.n_train]  # both classes, seeded
    train = encode_sentences("sst2", [train_all[i] for i in pick], tok, args.max_len, 4)
    test = encode_sentences("sst2", load_split("sst2", None, "test")[:args.n_test], tok,
                            args.max_len, 4)
    desc = encode_descriptions("sst2", tok)
    cfg = TuningConfig(popsize=4, budget=8, intrinsic_dim=20, prompt_len=4, eval_every=0,
                       checkpoint_every=0, seed=args.seed, head="similarity", temperature=0.05,
                       # the settings of results/real_tuning (made before BBT's defaults)
                       prompt_mode="cat_pre_ln", projection="normal", loss="ce",
                       selection="best_train")
    out = dict(setting=dict(
        model="all-MiniLM-L6-v2, method fot_puma (softmax_puma, gelu_puma), similarity head",
        task="sst2", n_train=args.n_train, n_test=args.n_test, max_len=args.max_len,
        tuning=dict(popsize=cfg.popsize, budget=cfg.budget, intrinsic_dim=cfg.intrinsic_dim,
                    prompt_len=cfg.prompt_len, seed=cfg.seed),
        field="FM64, 18 fraction bits", machine="shared 2-core CPU, SPU simulator",
        command=common.command_line()))
    with make_backend("plaintext_fxp", field="FM64") as backend:
        tuner = Tuner(cfg, backend, config, params, None, descriptions=desc, progress=False)
        summary = tuner.run(train)
    z = np.concatenate([np.zeros((1, cfg.intrinsic_dim)), np.asarray([summary["best_z"]]),
                        rng.standard_normal((2, cfg.intrinsic_dim))]).astype(np.float32)
    prompts = np.asarray(prompts_from_z(jnp.asarray(z), tuning_projection(cfg, config, params),
                                        prompt_len=cfg.prompt_len))
    scores, test_scores = {}, {}
    for name in ("plaintext_fxp", "aby3"):
        t0 = time.perf_counter()
        with make_backend(name, field="FM64") as backend:
            ev = SimilarityEvaluator(
                backend, config, backend.put(params, owner="model"), desc,
                temperature=cfg.temperature, prompt_len=cfg.prompt_len,
                prompt_mode=cfg.prompt_mode)
            scores[name] = ev.logits(ev.share_examples(train), prompts)
            test_scores[name] = ev.logits(ev.share_examples(test), prompts[:2])
            bytes_total = ev.bytes_total
        loss = np.asarray(candidate_losses(jnp.asarray(scores[name]), train.labels))
        acc = lambda s, y: [float(np.mean(s[i].argmax(-1) == y)) for i in range(len(s))]  # noqa: E731
        out[name] = dict(
            train_loss_zero_tuned=loss[:2].tolist(),
            train_acc_zero_tuned=acc(scores[name], train.labels)[:2],
            test_acc_zero_tuned=acc(test_scores[name], test.labels),
            bytes_total=bytes_total, wall_s=round(time.perf_counter() - t0, 1))
        print(name, json.dumps(out[name]), flush=True)
    out["tuning_on_plaintext_fxp"] = dict(final_loss=summary["final_loss"],
                                          best_z=summary["best_z"])
    diff = np.abs(np.concatenate([(scores["aby3"] - scores["plaintext_fxp"]).ravel(),
                                  (test_scores["aby3"] - test_scores["plaintext_fxp"]).ravel()]))
    out["scores"] = dict(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                         entries=int(diff.size), within_1e_2=bool(diff.max() <= 1e-2),
                         **{k: v.tolist() for k, v in scores.items()})
    print(json.dumps({k: v for k, v in out["scores"].items() if k not in scores}))
    common.write_json(args.out, out)


if __name__ == "__main__":
    main()
