#!/usr/bin/env bash
# Depth and width together on SST-2 (issue: depth + width), MiniLM-L6 from ../shared, sized
# for a 2-core CPU (a 16k-sentence train subset, as the early-exit runs). Each step is
# resumable: rerunning skips finished work.
#   1. a Joint multi-exit model, heads on the mean of the real tokens (MiniLM's lower-layer
#      [CLS] is near constant), exits at 20x lr, 1 epoch, the 3 best dev checkpoints kept;
#   2. AdapLeR's phase 2 on it: saliencies of those 3 checkpoints (mean-pooled final head);
#   3a. recipe A, `depth_width` joint from (1): AdapLeR's phase 3 with every exit's loss;
#   3b. recipe B: AdapLeR phase 3 from (1) with the same schedule, then `depth_width`
#      two_stage (stage1_fraction 0) from its last checkpoint: fresh exits trained on the
#      frozen model;
#   4. `jaxit sweep` of each final checkpoint: threshold x eta scale, batched wall clock.
# Phase 3 settings: the AdapLeR SST-2 run's CPU deviations (lr 1e-5, CP lr x100, phi 1e-2,
# eta/theta lr 2e-3, gamma 0.1) with lambda held at 10 (lambda_growth 1): on SST-2 the CPs
# were sharpest while lambda was still 10 (BUILD_NOTES, AdapLeR on SST-2).
# Usage: bash experiments/real_data/depth_width_sst2.sh [RUNS_DIR] [PART: all|1|2|3a|3b|4]
set -u
RUNS=${1:-/work/runs/dw}
PART=${2:-all}
SHARED=${JAXIT_SHARED:-../shared}
CFG=experiments/configs/finetune.py
N=16000
BASE=(--config.model="$SHARED/models/all-MiniLM-L6-v2" --config.task=sst2
      --config.progress=False --config.train.seed=0 --config.data.max_train_examples=$N
      --config.method.pooling=mean)
PHASE3=(--config.method.saliency_dir="$RUNS/sst2_sal" --config.init_from="$RUNS/sst2_joint"
        --config.data.max_length=64 --config.train.num_epochs=2
        --config.train.warmup_fraction=0.06 --config.train.learning_rate=1e-5
        --config.method.cp_lr_scale=100 --config.method.phi=1e-2 --config.method.speed_lr=2e-3
        --config.method.gamma=0.1 --config.method.lambda_growth=1 --config.save_every=250
        --config.eval_every=250 --config.keep_checkpoints=4 --config.log_every=50)
mkdir -p "$RUNS"
want() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }

if want 1; then
  echo "=== 1: joint multi-exit $(date)"
  jaxit train --config=$CFG --workdir="$RUNS/sst2_joint" "${BASE[@]}" \
    --config.method.name=early_exit --config.method.exits_lr_scale=20 \
    --config.train.learning_rate=5e-5 --config.train.num_epochs=1 --config.save_every=100 \
    --config.eval_every=100 --config.keep_checkpoints=1 --config.keep_best=3 \
    --config.best_metric=accuracy || exit 1
fi
if want 2; then
  echo "=== 2: saliencies $(date)"
  python -m jaxit.interpret.saliency --run="$RUNS/sst2_joint" --out="$RUNS/sst2_sal" \
    --splits=train --top_k=3 --max_examples=$N --seed=0 --max_length=64 --no_progress || exit 1
fi
if want 3a; then
  echo "=== 3a: depth_width joint $(date)"
  jaxit train --config=$CFG --workdir="$RUNS/sst2_dw_joint" "${BASE[@]}" "${PHASE3[@]}" \
    --config.method.name=depth_width --config.method.strategy=joint \
    --config.method.exits_lr_scale=20 || exit 1
fi
if want 3b; then
  echo "=== 3b: adapler, then exits on it $(date)"
  jaxit train --config=$CFG --workdir="$RUNS/sst2_adapler" "${BASE[@]}" "${PHASE3[@]}" \
    --config.method.name=adapler || exit 1
  jaxit train --config=$CFG --workdir="$RUNS/sst2_dw_exits" "${BASE[@]}" "${PHASE3[@]}" \
    --config.init_from="$RUNS/sst2_adapler" --config.init_from_checkpoint=latest \
    --config.method.name=depth_width \
    --config.method.strategy=two_stage --config.method.stage1_fraction=0 \
    --config.train.num_epochs=1 --config.train.learning_rate=5e-5 \
    --config.method.exits_lr_scale=20 || exit 1
fi
if want 4; then
  for run in sst2_dw_joint sst2_dw_exits; do
    [ -d "$RUNS/$run/checkpoints" ] || continue
    echo "=== 4: sweep $run $(date)"
    jaxit sweep --workdir="$RUNS/$run" --checkpoint=latest --policies=confidence \
      --batch_size=32 > "$RUNS/$run.sweep.log" || echo "FAILED sweep $run"
  done
fi
echo "=== depth_width_sst2.sh $PART done $(date)"
