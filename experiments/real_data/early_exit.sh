#!/usr/bin/env bash
# Real-data early-exit runs (issue: early exit), MiniLM-L6 from ../shared, sized for a 2-core
# CPU: SST-2 (16k-sentence train subset, 1 epoch = 500 steps) and MRPC (full train, 2 epochs)
# with BERxiT Alternating and Joint; STS-B (full train, 2 epochs) with Alternating + LTE.
# Each run is followed by `jaxit sweep` (layer-wise scores, threshold sweeps, batch-1 wall
# clock). Heads read the mean of the real tokens (pooling=mean: MiniLM-L6 is a
# sentence-transformers checkpoint whose lower-layer [CLS] barely varies across inputs) and
# learn at 20x the backbone's lr (a few hundred steps instead of the papers' 3 epochs).
# Usage: bash experiments/real_data/early_exit.sh [RUNS_DIR] [PART]
#   PART: sst2 | mrpc_alternating | stsb | mrpc_joint | sst2_elbert | mrpc_elbert |
#         sst2_fastbert | all
# Resumable: rerunning picks up each run from its latest checkpoint.
set -u
RUNS=${1:-runs/real}
PART=${2:-all}
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
  jaxit sweep --workdir="$RUNS/$name" --policies="$policies" --wallclock_examples=300 \
    || echo "FAILED sweep $name"
}

SST2=(--config.task=sst2 --config.data.max_train_examples=16000 --config.train.num_epochs=1)
MRPC=(--config.task=mrpc --config.train.num_epochs=2)
STSB=(--config.task=stsb --config.train.num_epochs=2
      --config.method.lte=True)
case $PART in sst2|all)
  run sst2_alternating confidence,entropy,patience "${SST2[@]}" --config.method.name=berxit
  run sst2_joint confidence,entropy,patience "${SST2[@]}" --config.method.name=early_exit ;;
esac
case $PART in mrpc_alternating|all)
  run mrpc_alternating confidence,entropy,patience "${MRPC[@]}" --config.method.name=berxit ;;
esac
case $PART in stsb|all)
  run stsb_alternating_lte lte,patience "${STSB[@]}" --config.method.name=berxit ;;
esac
case $PART in sst2_elbert|all)  # ELBERT: one shared classifier, its two-stage window rule
  run sst2_elbert elbert,confidence,entropy "${SST2[@]}" --config.method.name=elbert ;;
esac
case $PART in mrpc_elbert|all)
  run mrpc_elbert elbert,confidence,entropy "${MRPC[@]}" --config.method.name=elbert ;;
esac
case $PART in sst2_fastbert|all)  # FastBERT: its own attention heads against BERT-style heads
  run sst2_fastbert normalized_entropy,confidence "${SST2[@]}" --config.method.name=fastbert
  run sst2_fastbert_bert_heads normalized_entropy,confidence "${SST2[@]}" \
    --config.method.name=fastbert --config.method.head=bert ;;
esac
case $PART in mrpc_joint|all)
  run mrpc_joint confidence,entropy,patience "${MRPC[@]}" --config.method.name=early_exit ;;
esac
echo "=== early_exit.sh $PART done $(date)"
