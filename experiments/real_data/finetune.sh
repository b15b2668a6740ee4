#!/usr/bin/env bash
# Phase 1 of AdapLeR (issue 6): fine-tune MiniLM-L6 from ../shared on TASK, keeping the 3 best
# dev checkpoints (by accuracy) that phase 2 averages its saliencies over (seed 002 §3.3).
# Resumable: rerunning resumes from the latest checkpoint (a finished run does nothing).
# Usage: bash experiments/real_data/finetune.sh RUN TASK [TRAIN FLAGS...]
#   (the flags set the schedule: learning rate, epochs, max length, subset, eval/save steps;
#   adapler_sst2.sh and adapler_hatexplain.sh give theirs)
set -u
[ $# -ge 2 ] || { echo "usage: $0 RUN TASK [TRAIN FLAGS...]" >&2; exit 2; }
RUN=$1
TASK=$2
shift 2
SHARED=${JAXIT_SHARED:-../shared}
jaxit train --config=experiments/configs/finetune.py --workdir="$RUN" \
  --config.model="$SHARED/models/all-MiniLM-L6-v2" --config.task="$TASK" \
  --config.method.name=finetune --config.train.seed=0 \
  --config.keep_best=3 --config.best_metric=accuracy --config.progress=False "$@"
