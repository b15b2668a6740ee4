#!/usr/bin/env bash
# Real-data DACT-BERT runs (issue: DACT), MiniLM-L6 from ../shared, CPU-sized.
# Stage 1 (fine-tuning) is a separate `finetune` run; stage 2 starts from its best checkpoint
# (`init_from`, stage1_fraction 0), once per tau, then `jaxit sweep` (DACT's halting rule plus
# confidence/entropy on the same exits, batch-1 wall clock vs the static model).
# Heads read the mean of the real tokens (pooling=mean, see early_exit.sh), so stage 1 is a
# mean-pooled fine-tune here (16k SST-2 sentences, 1 epoch; MRPC 3 epochs).
# Usage: bash experiments/real_data/dact.sh [RUNS_DIR] [SST2_FINETUNED_RUN]
#   SST2_FINETUNED_RUN: an SST-2 `finetune` workdir trained with the same pooling.
set -u
RUNS=${1:-runs/real}
SST2_FT=${2:-$RUNS/sst2_finetune}
SHARED=${JAXIT_SHARED:-../shared}
CFG=experiments/configs/finetune.py
COMMON=(--config.model="$SHARED/models/all-MiniLM-L6-v2" --config.progress=False
        --config.keep_checkpoints=1 --config.save_every=100 --config.train.learning_rate=5e-5
        --config.method.pooling=mean)
DACT=(--config.method.name=dact --config.method.stage1_fraction=0
      --config.method.exits_lr_scale=20)

train() {  # train NAME ARGS...
  local name=$1; shift
  echo "=== $name: train $(date)"
  jaxit train --config=$CFG --workdir="$RUNS/$name" "${COMMON[@]}" "$@" || echo "FAILED $name"
}
sweep() {  # sweep NAME ARGS...
  local name=$1; shift
  echo "=== $name: sweep $(date)"
  jaxit sweep --config=$CFG --workdir="$RUNS/$name" "${COMMON[@]}" "$@" \
    --policies=confidence,entropy --wallclock_examples=300 || echo "FAILED sweep $name"
}

SST2=(--config.task=sst2)
[ -d "$SST2_FT/best" ] || train sst2_finetune "${SST2[@]}" --config.train.num_epochs=1 \
  --config.data.max_train_examples=16000
for tau in 5e-3 5e-2 5e-1; do
  args=("${SST2[@]}" "${DACT[@]}" --config.method.tau=$tau --config.init_from="$SST2_FT"
        --config.data.max_train_examples=8000 --config.train.num_epochs=1)
  train dact_sst2_tau$tau "${args[@]}" && sweep dact_sst2_tau$tau "${args[@]}"
done

MRPC=(--config.task=mrpc --config.train.num_epochs=3)
[ -d "$RUNS/mrpc_finetune/best" ] || train mrpc_finetune "${MRPC[@]}"
for tau in 5e-3 5e-2 5e-1; do
  args=("${MRPC[@]}" "${DACT[@]}" --config.method.tau=$tau --config.init_from="$RUNS/mrpc_finetune")
  train dact_mrpc_tau$tau "${args[@]}" && sweep dact_mrpc_tau$tau "${args[@]}"
done
echo "=== done $(date)"
