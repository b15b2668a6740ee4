#!/usr/bin/env bash
# Real-data DACT-BERT runs (issue: DACT), MiniLM-L6 from ../shared, sized for a 2-core CPU.
# Stage 1 (a fine-tuned backbone with mean-pooled heads) is taken from the BERxiT Alternating
# run of early_exit.sh on the same task: `init_from` copies its encoder, last head AND its
# intermediate exits (a warm start for the exits; the paper trains them from scratch in
# stage 2). Stage 2 (stage1_fraction 0) trains everything with the DACT loss, once per tau,
# then `jaxit sweep` evaluates DACT's halting rule (and confidence/entropy on the same exits)
# with batch-1 wall clock vs the static model.
# Usage: [TAUS="5e-3 5e-2 5e-1"] [SST2_N=8000] [SUFFIX=] [INIT=sst2_alternating] \
#          bash experiments/real_data/dact.sh [RUNS_DIR] [TASK]
#   (TASK: sst2|mrpc|all; SST2_N: the SST-2 training subset, one epoch; SUFFIX: appended to
#   the run names, e.g. _16k; INIT: the SST-2 stage-1 run under RUNS_DIR, e.g. sst2_joint)
set -u
RUNS=${1:-runs/real}
TASK=${2:-all}
TAUS=${TAUS:-5e-3 5e-2 5e-1}
SST2_N=${SST2_N:-8000}
SUFFIX=${SUFFIX:-}
INIT=${INIT:-sst2_alternating}
SHARED=${JAXIT_SHARED:-../shared}
CFG=experiments/configs/finetune.py
COMMON=(--config.model="$SHARED/models/all-MiniLM-L6-v2" --config.progress=False
        --config.keep_checkpoints=1 --config.save_every=100 --config.train.learning_rate=5e-5
        --config.method.pooling=mean --config.method.name=dact
        --config.method.stage1_fraction=0 --config.method.exits_lr_scale=20)

run() {  # run NAME ARGS...: train then sweep
  local name=$1; shift
  echo "=== $name: train $(date)"
  jaxit train --config=$CFG --workdir="$RUNS/$name" "${COMMON[@]}" "$@" || { echo "FAILED $name"; return; }
  echo "=== $name: sweep $(date)"
  jaxit sweep --workdir="$RUNS/$name" --policies=confidence,entropy --wallclock_examples=300 \
    || echo "FAILED sweep $name"
}

for tau in $TAUS; do
  case $TASK in sst2|all)
    run dact_sst2_tau$tau$SUFFIX --config.task=sst2 --config.method.tau=$tau \
      --config.init_from="$RUNS/$INIT" --config.data.max_train_examples="$SST2_N" \
      --config.train.num_epochs=1 ;;
  esac
done
for tau in $TAUS; do
  case $TASK in mrpc|all)
    run dact_mrpc_tau$tau$SUFFIX --config.task=mrpc --config.method.tau=$tau \
      --config.init_from="$RUNS/mrpc_alternating" --config.train.num_epochs=1 ;;
  esac
done
echo "=== dact.sh $TASK done $(date)"
