# shellcheck shell=bash
# Helpers shared by the tpu_scripts (sourced, not run). Options are always --opt=value.

PROG=$(basename "$0")
DRY_RUN=0

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  printf "Run '%s --help' for usage.\n" "$PROG" >&2
  exit 2
}

# usage: the script's header comment (from line 2 to the first line that is not a comment)
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; }

# q WORD: WORD quoted for a POSIX shell: bare when that is safe, else in '...' (only the value
# of an --option=value)
q() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  elif [[ $1 =~ ^--[A-Za-z0-9_.-]+= ]]; then printf '%s' "${BASH_REMATCH[0]}"; q "${1#*=}"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# qcmd WORD...: the words quoted and joined into one command line
qcmd() {
  local out="" w
  for w in "$@"; do out+="${out:+ }$(q "$w")"; done
  printf '%s' "$out"
}

# run CMD...: with --dry-run print CMD (one line, quoted); otherwise echo it to stderr and run it
run() {
  if ((DRY_RUN)); then printf '%s\n' "$(qcmd "$@")"
  else printf '+ %s\n' "$(qcmd "$@")" >&2; "$@"; fi
}

# need --opt VALUE: VALUE must be given; check --opt VALUE REGEX WHAT: VALUE must match REGEX
need() { [[ -n $2 ]] || die "missing required option $1=..."; }
check() { [[ $2 =~ $3 ]] || die "invalid $1 '$2' (expected $4)"; }

# common_opt ARG: --help, --dry-run, and errors for anything else
common_opt() {
  case $1 in
    -h | --help) usage ;;
    --dry-run) DRY_RUN=1 ;;
    --*=*) die "unknown option ${1%%=*}" ;;
    --*) if grep -q -- "$1=" "$0"; then die "option $1 needs a value: $1=VALUE"; fi
         die "unknown option $1" ;;
    *) die "unexpected argument '$1'" ;;
  esac
}

# home_rel PATH: remote paths are relative to the home directory; drop a leading ~/
home_rel() { local p=$1; [[ $p == "~" ]] && p=.; printf '%s' "${p#\~/}"; }

# --- Cloud TPU -------------------------------------------------------------------------------
NAME="" ZONE="" PROJECT=""

tpu_opt() {
  case $1 in
    --name=*) NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    *) common_opt "$1" ;;
  esac
}

# check_tpu: validate --name/--zone/--project; set TPU_FLAGS for gcloud
check_tpu() {
  need --name "$NAME"
  need --zone "$ZONE"
  check --name "$NAME" '^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$' "lowercase letters, digits, -: my-tpu"
  check --zone "$ZONE" '^[a-z]+-[a-z]+[0-9]+-[a-z]$' "a zone like us-central2-b"
  TPU_FLAGS=("--zone=$ZONE")
  if [[ -n $PROJECT ]]; then
    check --project "$PROJECT" '^([a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$' \
      "a project id like my-project-123"
    TPU_FLAGS+=("--project=$PROJECT")
  fi
}

# tpu_ssh --worker=W --command=CMD;  tpu_scp SRC DEST --worker=W (DEST on the workers)
tpu_ssh() { run gcloud compute tpus tpu-vm ssh "$NAME" "${TPU_FLAGS[@]}" "$@"; }
tpu_scp() { run gcloud compute tpus tpu-vm scp "$1" "$NAME:$2" "${TPU_FLAGS[@]}" "${@:3}"; }

# --- installing jaxit (setup_tpu.sh, run_cuda.sh install) ------------------------------------
GIT="" REF="" WHEEL="" EXTRAS="" PYVER=3.12 VENV="" PKGS=()

install_opt() {
  case $1 in
    --git=*) GIT=${1#*=} ;;
    --ref=*) REF=${1#*=} ;;
    --wheel=*) WHEEL=${1#*=} ;;
    --extras=*) EXTRAS=${1#*=} ;;
    --python=*) PYVER=${1#*=} ;;
    --venv=*) VENV=${1#*=} ;;
    --pip=*) PKGS+=("${1#*=}") ;;
    *) return 1 ;;
  esac
}

# check_install: validate the source options; set JAXIT_SPEC (requirement for pip, wheel is
# referenced by its basename: copy it to the remote home directory first)
check_install() {
  [[ -n $GIT || -n $WHEEL ]] || die "missing the jaxit source: --git=URL or --wheel=FILE"
  [[ -z $GIT || -z $WHEEL ]] || die "--git and --wheel are mutually exclusive"
  [[ -z $EXTRAS ]] || check --extras "$EXTRAS" '^[a-z0-9_-]+(,[a-z0-9_-]+)*$' "a list: data,tfds"
  check --python "$PYVER" '^3\.[0-9]+$' "a Python version like 3.12"
  local extras=${EXTRAS:+[$EXTRAS]}
  if [[ -n $GIT ]]; then
    GIT=${GIT#git+}
    check --git "$GIT" '^(https?|ssh|file)://[^[:space:]]+$' \
      "https://host/org/repo.git or ssh://git@host/org/repo.git"
    [[ -z $REF ]] || check --ref "$REF" '^[A-Za-z0-9._/-]+$' "a branch, tag or commit"
    JAXIT_SPEC="jaxit$extras @ git+$GIT${REF:+@$REF}"
  else
    [[ -z $REF ]] || die "--ref only applies to --git"
    [[ -f $WHEEL ]] || die "wheel/sdist not found: $WHEEL"
    [[ $WHEEL == *.whl || $WHEEL == *.tar.gz ]] || die "--wheel needs a .whl or .tar.gz: $WHEEL"
    JAXIT_SPEC="./$(basename "$WHEEL")$extras"
  fi
}

# install_script JAX_REQ: remote shell command that puts a Python $PYVER venv (made with uv, since
# TPU images ship an older Python) at $VENV and installs jax + jaxit in one resolve
install_script() {
  local venv reqs
  venv=$(q "$(home_rel "$VENV")") reqs=$(qcmd "$1" "$JAXIT_SPEC" "${PKGS[@]}")
  printf '%s' "cd && set -e && export PATH=\"\$HOME/.local/bin:\$PATH\" && "
  printf '%s' "{ command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; } && "
  printf '%s' "uv venv --allow-existing --python $(q "$PYVER") $venv && "
  printf '%s' "uv pip install --reinstall-package jaxit --python $venv/bin/python $reqs && "
  printf '%s' "$venv/bin/python -c \"import jax, jaxit\" && echo \"\$(hostname): jaxit ready\""
}

# --- jaxit train (run_tpu.sh, run_cuda.sh train) ---------------------------------------------
CONFIG="" WORKDIR="" LOG=jaxit_logs/train.log MODE=fg SESSION=jaxit COPY_CONFIG=1
ENVS=() OVERRIDES=() EXTRA=()

train_opt() {
  case $1 in
    --config=*) CONFIG=${1#*=} ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --config.*=*) OVERRIDES+=("$1") ;;
    --config.*) die "override $1 needs a value: $1=VALUE" ;;
    --env=*) ENVS+=("${1#*=}") ;;
    --log=*) LOG=${1#*=} ;;
    --tmux) MODE="tmux" ;;
    --nohup) MODE="nohup" ;;
    --session=*) SESSION=${1#*=} ;;
    --no-copy-config) COPY_CONFIG=0 ;;
    *) return 1 ;;
  esac
}

# check_train REMOTE: validate. With REMOTE=1, workdir and log are relative to the remote home
# and, unless --no-copy-config, CONFIG_SRC is the local config file and CONFIG its copy on the
# workers (jaxit_run/<file>[:variant]).
check_train() {
  need --config "$CONFIG"
  need --workdir "$WORKDIR"
  check --session "$SESSION" '^[A-Za-z0-9_-]+$' "letters, digits, _ and -"
  [[ -n $LOG ]] || die "--log must not be empty"
  [[ $WORKDIR != gs://* ]] ||
    check --workdir "$WORKDIR" '^gs://[a-z0-9][-a-z0-9_.]*[a-z0-9](/.*)?$' "gs://bucket/path"
  local e file=${CONFIG%%:*} variant=""
  for e in "${ENVS[@]}"; do check --env "$e" '^[A-Za-z_][A-Za-z0-9_]*=' "NAME=VALUE"; done
  if [[ $CONFIG == *:* ]]; then variant=":${CONFIG#*:}"; fi
  CONFIG_SRC=""
  if (($1)); then
    WORKDIR=$(home_rel "$WORKDIR") LOG=$(home_rel "$LOG") CONFIG=$(home_rel "$CONFIG")
    ((COPY_CONFIG)) || return 0
    CONFIG_SRC=$file CONFIG="jaxit_run/$(basename "$file")$variant"
  fi
  [[ -f $file ]] ||
    die "config file not found: $file${CONFIG_SRC:+ (--no-copy-config: it is on the workers)}"
}

# train_script JAXIT [FLAG...]: shell command that runs `JAXIT train` with the config, workdir,
# FLAGs, overrides and extra args, output appended to $LOG: in the foreground, under nohup or
# in a detached tmux session
train_script() {
  local cmd log pre=()
  if ((${#ENVS[@]})); then pre=(env "${ENVS[@]}"); fi
  cmd=$(qcmd "${pre[@]}" "$1" train "--config=$CONFIG" "--workdir=$WORKDIR" "${@:2}" \
    "${OVERRIDES[@]}" "${EXTRA[@]}")
  log=$(q "$LOG")
  printf '%s' "mkdir -p $(q "$(dirname "$LOG")") && "
  case $MODE in
    fg) printf '%s' "set -o pipefail && $cmd 2>&1 | tee -a $log" ;;
    nohup) printf '%s' "{ nohup $cmd >> $log 2>&1 < /dev/null & } && "
           printf '%s' "echo \"\$(hostname): started pid \$!, log:\" $log" ;;
    tmux) printf '%s' "tmux new-session -d -s $SESSION -c \"\$PWD\" "
          printf '%s' "$(q "set -o pipefail; $cmd 2>&1 | tee -a $log") && "
          printf '%s' "echo \"\$(hostname): started in tmux session $SESSION, log:\" $log" ;;
  esac
}

# stop_script: shell command stopping a jaxit train started by these scripts
stop_script() {
  printf '%s' "tmux kill-session -t $(q "$SESSION") 2>/dev/null; if pkill -f '[j]axit train'; "
  printf '%s' "then echo \"\$(hostname): stopped\"; else echo \"\$(hostname): nothing running\"; fi"
}
