#!/usr/bin/env bash
# Forward-only tuning on the real all-MiniLM-L6-v2 checkpoint with the similarity head
# (issue 14, item 4), 16-shot, seeds 13/21/42/87/100, plaintext, one run per (method, seed).
# Budget sized for a shared 2-core machine: popsize 6, 48 queries (8 generations), d = 20,
# 4 prompt tokens after [CLS] through the LayerNorm (cat_pre_ln), normal projection, CE loss,
# best-train selection: the pipeline defaults when these results were made (before BBT's
# pipeline became the default), pinned so the command reproduces them. Aggregate with experiments/real_tuning_table.py.
# Usage: experiments/real_tuning.sh <task> <max_len> <test_limit|null> <method>...
#   e.g. SECFWT_DATA_DIR=../shared/data experiments/real_tuning.sh sst2 40 null fot fot_puma
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?task}; MAXLEN=${2:?max_len}; LIMIT=${3:?test_limit}; shift 3
MODEL=$(python -c "from secfwt_jax.loading import package_checkpoint_dir as d; print(d())")
for METHOD in "$@"; do
  for SEED in 13 21 42 87 100; do
    OUT=results/real_tuning/runs/${TASK}_${METHOD}_${SEED}
    [ -f "$OUT/summary.json" ] && continue
    python experiments/run.py task="$TASK" task.data_seed="$SEED" seed="$SEED" \
      task.max_len="$MAXLEN" model=local model.path="$MODEL" head=similarity method="$METHOD" \
      budget=48 optimizer.popsize=6 intrinsic_dim=20 prompt_len=4 eval_every=2 \
      prompt_mode=cat_pre_ln projection=normal loss=ce selection=best_train \
      checkpoint_every=0 test_limit="$LIMIT" progress=false hydra.run.dir="$OUT"
  done
done
