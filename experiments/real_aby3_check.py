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

import argparse
import json
import os
import shlex
import sys
import time

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from secfwt_jax.backend import make_backend  # noqa: E402
from secfwt_jax.loading import load_pretrained, package_checkpoint_dir  # noqa: E402
from secfwt_jax.tasks import load_split  # noqa: E402
from secfwt_jax.tasks.sentences import encode_descriptions, encode_sentences  # noqa: E402
from secfwt_jax.tuning.evaluator import candidate_losses  # noqa: E402
from secfwt_jax.tuning.loop import Tuner, TuningConfig, tuning_projection  # noqa: E402
from secfwt_jax.tuning.projection import prompts_from_z  # noqa: E402
from secfwt_jax.tuning.similarity_evaluator import SimilarityEvaluator  # noqa: E402

METHOD = dict(attention="softmax_puma", activation="gelu_puma")  # method=fot_puma


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n-train", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=24)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="results/real_tuning/aby3_check.json")
    args = ap.parse_args(argv)
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
        command="python " + shlex.join([os.path.relpath(__file__), *sys.argv[1:]])))
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
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
