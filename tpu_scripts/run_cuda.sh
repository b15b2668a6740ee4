#!/usr/bin/env bash
# Install jaxit and run `jaxit train` on CUDA GPUs: on this machine, or on hosts over ssh. With
# two or more hosts, host i runs `jaxit train --distributed --coordinator_address=HOST0:PORT
# --num_processes=N --process_id=i` (one process per host, using all its GPUs).
#
# Usage: run_cuda.sh install [HOSTS] (--git=URL [--ref=REF] | --wheel=FILE | --editable=DIR)
#                            [options]
#        run_cuda.sh train [HOSTS] --config=FILE[:variant] --workdir=DIR [options]
#                          [--config.FIELD=VALUE ...] [-- JAXIT_ARGS...]
#        run_cuda.sh stop [HOSTS]
#
# HOSTS (default: this machine, no ssh):
#   --hosts=H0,H1,...        [user@]host names for ssh; H0 is the coordinator
#   --hostfile=FILE          one host per line (first field; # comments)
# install (this machine: pip into the active Python env; hosts: a uv venv, as on TPU):
#   --git=URL [--ref=REF]    install from git
#   --wheel=FILE             install a local wheel/sdist (copied to each host)
#   --editable=DIR           this machine only: pip install -e DIR (a checkout)
#   --extras=LIST            jaxit extras, e.g. data;  --pip=SPEC  one more package (repeatable)
#   --venv=DIR               venv on the hosts, relative to home (default: jaxit-venv)
#   --python=X.Y             Python version of that venv (default: 3.12)
# train:
#   --config=FILE[:variant]  local ml_collections config (copied to jaxit_run/ on each host)
#   --workdir=DIR            run directory; with several hosts it must be shared storage
#                            (NFS, gs://...) so that all processes see the same checkpoints
#   --config.FIELD=VALUE     config override, passed on as is (repeatable)
#   -- JAXIT_ARGS...         more jaxit train flags, e.g. -- --max_steps=1000
#   --coordinator=HOST:PORT  process 0's address as the other hosts reach it (default: H0:1234)
#   --env=NAME=VALUE         environment variable, e.g. --env=CUDA_VISIBLE_DEVICES=0,1 (repeatable)
#   --log=FILE               log file on each host (default: jaxit_logs/train.log, appended)
#   --tmux | --nohup         run in the background (tmux session --session=jaxit) and return
#   --no-copy-config         FILE is a path on the hosts: do not copy it
#   --venv=DIR               venv with jaxit (hosts default: jaxit-venv; here: jaxit on PATH)
# stop: stop jaxit train (tmux session --session=jaxit, or any `jaxit train` process)
# all:
#   --dry-run                print the commands (ssh, scp, pip, bash) instead of running them
#   -h, --help               this help
#
# Example: run_cuda.sh train --hosts=gpu0,gpu1 --config=experiments/configs/finetune.py \
#            --workdir=/nfs/runs/sst2 --config.task=sst2
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SUB=${1:-}
case $SUB in
  install | train | stop) shift; PROG="$PROG $SUB" ;;
  -h | --help) usage ;;
  "" | -*) die "missing command: install, train or stop (first argument)" ;;
  *) die "unknown command '$SUB' (expected install, train or stop)" ;;
esac

HOSTS_ARG="" HOSTFILE="" EDITABLE="" COORD=""
while (($#)); do
  case $SUB:$1 in
    *:--hosts=*) HOSTS_ARG=${1#*=} ;;
    *:--hostfile=*) HOSTFILE=${1#*=} ;;
    *:--venv=*) VENV=${1#*=} ;;
    install:--editable=*) EDITABLE=${1#*=} ;;
    install:*) install_opt "$1" || common_opt "$1" ;;
    train:--coordinator=*) COORD=${1#*=} ;;
    train:--) shift; EXTRA=("$@"); break ;;
    train:*) train_opt "$1" || common_opt "$1" ;;
    stop:--session=*) SESSION=${1#*=} ;;
    *) common_opt "$1" ;;
  esac
  shift
done

HOSTS=()
if [[ -n $HOSTFILE ]]; then
  [[ -z $HOSTS_ARG ]] || die "--hosts and --hostfile are mutually exclusive"
  [[ -f $HOSTFILE ]] || die "host file not found: $HOSTFILE"
  while read -r h _ || [[ -n ${h:-} ]]; do
    if [[ -n $h && $h != \#* ]]; then HOSTS+=("$h"); fi
  done <"$HOSTFILE"
  ((${#HOSTS[@]})) || die "no hosts in $HOSTFILE"
elif [[ -n $HOSTS_ARG ]]; then
  check --hosts "$HOSTS_ARG" '^[^,]+(,[^,]+)*$' "[user@]host names separated by commas"
  IFS=, read -ra HOSTS <<<"$HOSTS_ARG"
fi
for h in "${HOSTS[@]}"; do
  check --hosts "$h" '^([A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+$' "[user@]host names separated by commas"
done
DUP=$(printf '%s\n' "${HOSTS[@]}" | sort | uniq -d | head -n 1)
[[ -z $DUP ]] || die "host $DUP is listed twice (one process per host)"
N=${#HOSTS[@]}
if ((N)); then VENV=${VENV:-jaxit-venv}; fi

# in the background, one per host (printed in order with --dry-run); then wait for all of them
PIDS=()
bg() { if ((DRY_RUN)); then run "$@"; else run "$@" & PIDS+=($!); fi; }
wait_all() {
  local p rc=0
  for p in "${PIDS[@]}"; do wait "$p" || rc=1; done
  ((rc == 0)) || { echo "$PROG: failed on at least one host (see above)" >&2; exit 1; }
}

case $SUB in
  install)
    if [[ -n $EDITABLE ]]; then
      ((N == 0)) || die "--editable is for this machine only; for --hosts use --git or --wheel"
      [[ -z $GIT && -z $WHEEL ]] || die "--editable, --git and --wheel are mutually exclusive"
      [[ -f $EDITABLE/pyproject.toml ]] || die "--editable: no pyproject.toml in $EDITABLE"
      run python3 -m pip install 'jax[cuda12]' -e "$EDITABLE${EXTRAS:+[$EXTRAS]}" "${PKGS[@]}"
      exit 0
    fi
    check_install
    if ((N == 0)); then
      [[ -z $WHEEL ]] || JAXIT_SPEC="$WHEEL${EXTRAS:+[$EXTRAS]}"
      run python3 -m pip install 'jax[cuda12]' "$JAXIT_SPEC" "${PKGS[@]}"
      exit 0
    fi
    for h in "${HOSTS[@]}"; do
      [[ -z $WHEEL ]] || run scp "$WHEEL" "$h:$(basename "$WHEEL")"
      bg ssh "$h" "$(install_script 'jax[cuda12]')"
    done
    wait_all ;;
  train)
    check_train "$((N > 0))"
    if ((N == 0)); then
      run bash -c "$(train_script "${VENV:+$VENV/bin/}jaxit")"
      exit 0
    fi
    COORD=${COORD:-${HOSTS[0]#*@}:1234}
    check --coordinator "$COORD" '^[A-Za-z0-9._-]+:[0-9]{1,5}$' "HOST:PORT"
    ((${COORD##*:} <= 65535)) || die "invalid --coordinator port in '$COORD'"
    for h in "${HOSTS[@]}"; do
      [[ -z $CONFIG_SRC ]] || run ssh "$h" "mkdir -p jaxit_run"
      [[ -z $CONFIG_SRC ]] || run scp "$CONFIG_SRC" "$h:jaxit_run/$(basename "$CONFIG_SRC")"
    done
    for i in "${!HOSTS[@]}"; do
      DIST=()
      ((N == 1)) ||
        DIST=(--distributed "--coordinator_address=$COORD" "--num_processes=$N" "--process_id=$i")
      bg ssh "${HOSTS[i]}" "cd && $(train_script "$(home_rel "$VENV")/bin/jaxit" "${DIST[@]}")"
    done
    wait_all ;;
  stop)
    check --session "$SESSION" '^[A-Za-z0-9_-]+$' "letters, digits, _ and -"
    if ((N == 0)); then run bash -c "$(stop_script)"; exit 0; fi
    for h in "${HOSTS[@]}"; do bg ssh "$h" "$(stop_script)"; done
    wait_all ;;
esac
