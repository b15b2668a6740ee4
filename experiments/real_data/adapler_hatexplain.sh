#!/usr/bin/env bash
# Real-data AdapLeR on HateXplain (issue 6), MiniLM-L6 from ../shared, CPU-sized; resumable.
#   1. fine-tune on an N-post subset of train (seed 002 table 3: lr 3e-5, max length 72; 2
#      epochs instead of 5 for the CPU), keeping the 3 best dev checkpoints for phase 2;
#   2.-3. adapler.sh with TASK=hatexplain MAXLEN=72 and table 4's HateXplain settings
#      (gamma 5e-2, phi 2e-2, lambda 50 * 50^epoch), the CPU-schedule deviations of the SST-2
#      run kept (CP lr x100, eta/theta lr 2e-3, main lr 1e-5), and phi 0.1 instead of 2e-2
#      (eta learns only while lambda is small; see BUILD_NOTES: 2.36x vs 2.28x within 1 point).
# Usage: [PHI=1e-1] [FT_NAME=hatexplain_ft] bash experiments/real_data/adapler_hatexplain.sh [RUNS_DIR] [N] [EPOCHS] [RUN_NAME]
#   (N = 0: all training posts; give such a run its own FT_NAME, since the fine-tune is per subset;
#   BUILD_NOTES' full-data run: FT_NAME=hatexplain_ft_full SAVE_EVERY=235 KEEP=10 ... 0 5 adapler_hatexplain_full)
set -u
RUNS=${1:-/work/runs/real}
N=${2:-8000}
EPOCHS=${3:-5}
NAME=${4:-adapler_hatexplain}
PHI=${PHI:-1e-1}
FT="$RUNS/${FT_NAME:-hatexplain_ft}"

echo "=== phase 1: fine-tune $(date)"
bash "$(dirname "$0")/finetune.sh" "$FT" hatexplain --config.data.max_length=72 \
  --config.data.max_train_examples="$N" --config.train.learning_rate=3e-5 \
  --config.train.num_epochs=2 --config.train.warmup_fraction=0.06 --config.eval_every=100 \
  --config.save_every=100 || exit 1

TASK=hatexplain MAXLEN=72 bash "$(dirname "$0")/adapler.sh" "$RUNS/$NAME" "$FT" \
  "$N" "$EPOCHS" --config.train.learning_rate=1e-5 --config.method.cp_lr_scale=100 \
  --config.method.phi="$PHI" --config.method.gamma=5e-2 --config.method.speed_lr=2e-3 \
  --config.method.lambda_base=50 --config.method.lambda_growth=50
