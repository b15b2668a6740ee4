#!/usr/bin/env bash
# Install jax[tpu] and jaxit on every worker of a Cloud TPU VM, in a Python venv made with uv
# (TPU images ship Python 3.10; jaxit needs >= 3.11). Safe to re-run: it upgrades in place.
#
# Usage: setup_tpu.sh --name=NAME --zone=ZONE (--git=URL [--ref=REF] | --wheel=FILE) [options]
#
#   --name=NAME, --zone=ZONE, --project=PROJECT   the TPU (as for create_tpu.sh)
#   --git=URL          install from git, e.g. https://github.com/ORG/jaxit.git (the workers
#                      need access: use a public URL or a token in the URL)
#   --ref=REF          branch, tag or commit for --git (default: the default branch)
#   --wheel=FILE       install a local wheel or sdist (built with `pip wheel --no-deps -w dist .`
#                      in a checkout); it is first copied to every worker
#   --extras=LIST      jaxit extras, e.g. data (Hugging Face datasets) or data,tfds
#   --pip=SPEC         one more package to install, e.g. --pip=gcsfs (repeatable)
#   --venv=DIR         venv on the workers, relative to the home directory (default: jaxit-venv)
#   --python=X.Y       Python version of the venv (default: 3.12)
#   --worker=W         all (default), or workers like 0 / 1,3 / 0-2 (e.g. after a repair)
#   --dry-run          print the gcloud commands instead of running them
#   -h, --help         this help
#
# Example: setup_tpu.sh --name=jaxit-v4 --zone=us-central2-b \
#            --git=https://github.com/ORG/jaxit.git --ref=main
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV=jaxit-venv WORKER=all
for arg in "$@"; do
  case $arg in
    --worker=*) WORKER=${arg#*=} ;;
    *) install_opt "$arg" || tpu_opt "$arg" ;;
  esac
done

check_tpu
check --worker "$WORKER" '^(all|[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)$' \
  "all, or worker numbers like 0 / 1,3 / 0-2"
check_install
need --venv "$VENV"

if [[ -n $WHEEL ]]; then
  tpu_scp "$WHEEL" "$(basename "$WHEEL")" "--worker=$WORKER"
fi
tpu_ssh "--worker=$WORKER" "--command=$(install_script 'jax[tpu]')"
