#!/usr/bin/env bash
# Create a Cloud TPU VM: a single host (v4-8, v5litepod-8, v6e-8) or a pod slice (v4-32, ...).
#
# Usage: create_tpu.sh --name=NAME --zone=ZONE --accelerator-type=TYPE [options]
#                      [-- GCLOUD_FLAGS...]
#
#   --name=NAME              TPU name (lowercase letters, digits, -)
#   --zone=ZONE              e.g. us-central2-b (v4), us-west4-a (v5e), europe-west4-a
#   --accelerator-type=TYPE  e.g. v4-8, v4-32, v5litepod-8, v5p-8, v6e-8
#   --version=RUNTIME        TPU software version (default: tpu-ubuntu2204-base for v4 and
#                            older, v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv5 for v5p,
#                            v2-alpha-tpuv6e for v6e)
#   --project=PROJECT        Google Cloud project (default: gcloud's configured project)
#   --preemptible | --spot   cheaper capacity that can be reclaimed
#   --dry-run                print the gcloud command instead of running it
#   -h, --help               this help
#   -- GCLOUD_FLAGS...       passed on to gcloud (e.g. --network=NET --labels=team=nlp)
#
# Example: create_tpu.sh --name=jaxit-v4 --zone=us-central2-b --accelerator-type=v4-8
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ACCEL="" VERSION="" CAPACITY="" GCLOUD_EXTRA=()
while (($#)); do
  case $1 in
    --accelerator-type=*) ACCEL=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --preemptible | --spot)
      [[ -z $CAPACITY || $CAPACITY == "$1" ]] || die "--preemptible and --spot: choose one"
      CAPACITY=$1 ;;
    --) shift; GCLOUD_EXTRA=("$@"); break ;;
    *) tpu_opt "$1" ;;
  esac
  shift
done

check_tpu
need --accelerator-type "$ACCEL"
check --accelerator-type "$ACCEL" '^(v[2-6][a-z]*|v5litepod)-[1-9][0-9]*$' \
  "a type like v4-8, v4-32, v5litepod-8, v5p-8 or v6e-8"
if [[ -z $VERSION ]]; then
  case $ACCEL in
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi
check --version "$VERSION" '^[a-z0-9][-a-z0-9.]*$' "a runtime like tpu-ubuntu2204-base"

run gcloud compute tpus tpu-vm create "$NAME" "${TPU_FLAGS[@]}" "--accelerator-type=$ACCEL" \
  "--version=$VERSION" ${CAPACITY:+"$CAPACITY"} "${GCLOUD_EXTRA[@]}"
((DRY_RUN)) || echo "next: $(dirname "$0")/setup_tpu.sh --name=$NAME --zone=$ZONE" \
  "${PROJECT:+--project=$PROJECT }--git=URL" >&2
