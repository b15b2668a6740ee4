#!/usr/bin/env bash
# Every real-data run recorded in BUILD_NOTES.md, in priority order (each step resumable).
# Usage: bash experiments/real_data/run_all.sh [RUNS_DIR]
set -u
RUNS=${1:-runs/real}
D=$(dirname "$0")
bash "$D/early_exit.sh" "$RUNS" sst2
bash "$D/dact.sh" "$RUNS" sst2
bash "$D/early_exit.sh" "$RUNS" mrpc_alternating
bash "$D/early_exit.sh" "$RUNS" mrpc_joint
bash "$D/early_exit.sh" "$RUNS" stsb
bash "$D/dact.sh" "$RUNS" mrpc
echo "=== run_all done $(date)"
