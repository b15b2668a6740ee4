#!/usr/bin/env bash
# Run `jaxit train --distributed` on every worker of a Cloud TPU VM (one host or a pod slice).
# The local config file is copied to jaxit_run/ on each worker first. Output goes to the terminal
# and is appended to a log file on each worker (or, with --tmux/--nohup, only to the log).
#
# Usage: run_tpu.sh --name=NAME --zone=ZONE --config=FILE[:variant] --workdir=DIR [options]
#                   [--config.FIELD=VALUE ...] [-- JAXIT_ARGS...]
#
#   --name=NAME, --zone=ZONE, --project=PROJECT   the TPU (as for create_tpu.sh)
#   --config=FILE[:variant]  local ml_collections config, e.g. experiments/configs/finetune.py:tiny
#   --workdir=DIR            run directory; use gs://bucket/path on pod slices (all workers must
#                            see the same checkpoints); local paths are relative to the home dir
#   --config.FIELD=VALUE     config override, passed on to jaxit as is (repeatable)
#   -- JAXIT_ARGS...         more jaxit train flags, e.g. -- --max_steps=1000
#   --env=NAME=VALUE         environment variable for the run (repeatable)
#   --log=FILE               log file on each worker (default: jaxit_logs/train.log, appended)
#   --tmux                   run in a detached tmux session (--session, default jaxit) and return;
#                            attach with: gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=0
#                            then tmux attach -t jaxit
#   --nohup                  run in the background with nohup and return
#   --no-copy-config         FILE is a path on the workers (e.g. in a checkout there): do not copy
#   --venv=DIR               venv made by setup_tpu.sh (default: jaxit-venv)
#   --stop                   stop a running jaxit train on all workers instead (frees the TPU)
#   --dry-run                print the gcloud commands instead of running them
#   -h, --help               this help
#
# Example: run_tpu.sh --name=jaxit-v4 --zone=us-central2-b \
#            --config=experiments/configs/finetune.py --workdir=gs://my-bucket/jaxit/sst2 \
#            --config.task=sst2 --tmux
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV=jaxit-venv STOP=0
while (($#)); do
  case $1 in
    --venv=*) VENV=${1#*=} ;;
    --stop) STOP=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) train_opt "$1" || tpu_opt "$1" ;;
  esac
  shift
done

check_tpu
need --venv "$VENV"
if ((STOP)); then
  check --session "$SESSION" '^[A-Za-z0-9_-]+$' "letters, digits, _ and -"
  tpu_ssh --worker=all "--command=$(stop_script)"
  exit 0
fi
check_train 1

if [[ -n $CONFIG_SRC ]]; then
  tpu_ssh --worker=all "--command=mkdir -p jaxit_run"
  tpu_scp "$CONFIG_SRC" "jaxit_run/$(basename "$CONFIG_SRC")" --worker=all
fi
tpu_ssh --worker=all "--command=cd && $(train_script "$(home_rel "$VENV")/bin/jaxit" --distributed)"
