#!/usr/bin/env bash
# Real-data AdapLeR on SST-2 (issue 6), MiniLM-L6 from ../shared, all three phases from
# scratch; each resumable (rerun the script: finished work is skipped or resumed).
#   1. fine-tune on all of SST-2 train, 1 epoch at lr 5e-5 (dev 0.899 in BUILD_NOTES), dev
#      evaluated every 350 steps, the 3 best checkpoints kept for phase 2;
#   2.-3. adapler.sh: saliencies over those 3 checkpoints, then length-reduction training on
#      N sentences (0 = all 67,349, the paper's setting) for E epochs with run a's settings,
#      a checkpoint every half epoch (SAVE_EVERY=1052 steps at N = 0), and the selection.
# Usage: [FT_NAME=sst2_ft] [SAVE_EVERY=1052] [KEEP=10] bash experiments/real_data/adapler_sst2.sh [RUNS_DIR] [N] [EPOCHS] [RUN_NAME]
set -u
RUNS=${1:-/work/runs/real}
N=${2:-0}
EPOCHS=${3:-5}
NAME=${4:-adapler_sst2_full}
FT="$RUNS/${FT_NAME:-sst2_ft}"

echo "=== phase 1: fine-tune $(date)"
bash "$(dirname "$0")/finetune.sh" "$FT" sst2 --config.train.learning_rate=5e-5 \
  --config.train.num_epochs=1 --config.eval_every=350 --config.save_every=350 || exit 1

SAVE_EVERY=${SAVE_EVERY:-1052} KEEP=${KEEP:-10} \
  bash "$(dirname "$0")/adapler.sh" "$RUNS/$NAME" "$FT" "$N" "$EPOCHS"
