#!/usr/bin/env bash
# Delete a Cloud TPU VM (all its workers). Checkpoints under a gs:// workdir are kept.
#
# Usage: delete_tpu.sh --name=NAME --zone=ZONE [--project=PROJECT] [--yes] [--async] [--dry-run]
#
#   --yes        do not ask for confirmation (gcloud --quiet)
#   --async      return without waiting for the deletion to finish
#   --dry-run    print the gcloud command instead of running it
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

FLAGS=()
for arg in "$@"; do
  case $arg in
    --yes) FLAGS+=(--quiet) ;;
    --async) FLAGS+=(--async) ;;
    *) tpu_opt "$arg" ;;
  esac
done

check_tpu
run gcloud compute tpus tpu-vm delete "$NAME" "${TPU_FLAGS[@]}" "${FLAGS[@]}"
