#!/usr/bin/env bash
# Real-data early-exit runs (issue: early exit), MiniLM-L6 from ../shared, CPU-sized:
# SST-2 (16k-sentence train subset, 1 epoch) and MRPC (full train, 3 epochs) with BERxiT
# Alternating and Joint; STS-B (full train, 2 epochs) with Alternating + LTE. Each run is
# followed by `jaxit sweep` (layer-wise scores, threshold sweeps, batch-1 wall clock).
# Heads read the mean of the real tokens (pooling=mean: MiniLM-L6 is a sentence-transformers
# checkpoint whose lower-layer [CLS] barely varies across inputs) and learn at 20x the
# backbone's lr (a 500-step schedule instead of the papers' 3 epochs).
# Usage: bash experiments/real_data/early_exit.sh [RUNS_DIR]   (default runs/real)
# Resumable: rerunning picks up each run from its latest checkpoint.
set -u
RUNS=${1:-runs/real}
SHARED=${JAXIT_SHARED:-../shared}
CFG=experiments/configs/finetune.py
COMMON=(--config.model="$SHARED/models/all-MiniLM-L6-v2" --config.progress=False
        --config.keep_checkpoints=1 --config.save_every=100 --config.train.learning_rate=5e-5
        --config.method.exits_lr_scale=20 --config.method.pooling=mean)

run() {  # run NAME POLICIES ARGS...: train then sweep
  local name=$1 policies=$2; shift 2
  echo "=== $name: train $(date)"
  jaxit train --config=$CFG --workdir="$RUNS/$name" "${COMMON[@]}" "$@" || { echo "FAILED $name"; return; }
  echo "=== $name: sweep $(date)"
  jaxit sweep --config=$CFG --workdir="$RUNS/$name" "${COMMON[@]}" "$@" \
    --policies="$policies" --wallclock_examples=300 || echo "FAILED sweep $name"
}

SST2=(--config.task=sst2 --config.data.max_train_examples=16000 --config.train.num_epochs=1)
run sst2_alternating confidence,entropy,patience "${SST2[@]}" --config.method.name=berxit
run sst2_joint confidence,entropy,patience "${SST2[@]}" --config.method.name=early_exit
MRPC=(--config.task=mrpc --config.train.num_epochs=3)
run mrpc_alternating confidence,entropy,patience "${MRPC[@]}" --config.method.name=berxit
run mrpc_joint confidence,entropy,patience "${MRPC[@]}" --config.method.name=early_exit
STSB=(--config.task=stsb --config.train.num_epochs=2 --config.method.lte=True)
run stsb_alternating_lte lte,patience "${STSB[@]}" --config.method.name=berxit
echo "=== done $(date)"
