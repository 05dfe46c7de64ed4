"""A tiny method=secfwt tuning run whose data owner records every trig mask it draws (not a
test module; tests/test_mask_entropy.py runs it in fresh processes).

    python tests/mask_run.py PROTOCOL RUN_DIR OUT.npz [STOP_AFTER]

Writes OUT.npz: masks (int64 t' * 2^f of every masked element the data owner generated, all
calls in order), metrics (the loss of each generation this process ran).
"""

import json
import os
import sys

import numpy as np

from secfwt_jax import ModelConfig, init_params
from secfwt_jax.backend import make_backend, masked_trig
from secfwt_jax.tasks.planted import make_planted
from secfwt_jax.tuning.loop import Tuner, TuningConfig, tuning_projection

# the examples: the planted task of tests/test_tuning.py; the model tuned on them: method=secfwt
# (rfa with the masked one-round trigonometry) on the tiny model
BASE = ModelConfig.preset(
    "tiny", initializer_range=0.3, attention="softmax_puma", activation="gelu_puma"
)
CFG = ModelConfig(**{**BASE.__dict__, "attention": "rfa", "rfa_trig": "masked",
                     "num_features": 8, "normalize_qk": True})
TCFG = TuningConfig(projection="normal", popsize=4, intrinsic_dim=4, prompt_len=2,
                    budget=8, eval_every=0,
                    checkpoint_every=1, seed=1)


def main(protocol, run_dir, out, stop_after=None):
    recorded = []
    draw = masked_trig.make_trig_masks

    def recording(shape, fraction_bits, mask_bits, rng, field_bits):
        m = draw(shape, fraction_bits, mask_bits, rng, field_bits)
        # t' * 2^f as an integer: limb i carries L_i 2^(24 i - f) exactly
        scaled = [np.ldexp(limb.astype(np.float64), fraction_bits).astype(np.int64)
                  for limb in m["t"]]
        recorded.append(np.sum(scaled, axis=0).ravel())
        return m

    masked_trig.make_trig_masks = recording  # every mask the data owner draws passes here
    params = init_params(CFG, seed=0)
    base = init_params(BASE, seed=0)
    task = make_planted(BASE, base, np.asarray(tuning_projection(TCFG, BASE, base)),
                        prompt_len=TCFG.prompt_len, n_train=16, n_dev=16, n_test=16, seq_len=8,
                        teacher_scale=3.0, prompt_mode=TCFG.prompt_mode, seed=1)
    with make_backend(protocol) as be:
        tuner = Tuner(TCFG, be, CFG, params, task.label_word_ids, run_dir=run_dir,
                      progress=False)
        # 8 of the 16 planted examples: the masks are what is recorded; fewer rows, less time
        tuner.run(task.train.take(np.arange(8)), stop_after=stop_after)
    metrics = [json.loads(x)["loss"] for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    np.savez(out, masks=np.concatenate(recorded) if recorded else np.zeros(0, np.int64),
             metrics=np.asarray(metrics))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
