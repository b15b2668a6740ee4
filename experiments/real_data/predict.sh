#!/usr/bin/env bash
# `jaxit predict` on real text with a trained early-exit run (issue: jaxit predict): all of
# SST-2 dev (its accuracy must equal `jaxit sweep`'s at the same operating point) and the
# first N training sentences (a longer input), at the sweep's operating point and with the
# static full model (--policy=never). Each setting runs twice: with an empty compilation
# cache (cold: what a first call costs) and again with the cache it filled (warm).
# Usage: [N=8000] bash experiments/real_data/predict.sh RUN_DIR [OUT_DIR]
#   RUN_DIR: e.g. runs/real/sst2_joint (early_exit.sh, then jaxit sweep)
set -eu
RUN=$1
OUT=${2:-$RUN/predict}
N=${N:-8000}
SHARED=${JAXIT_SHARED:-../shared}
mkdir -p "$OUT"
tail -n +2 "$SHARED/data/SST-2/train.tsv" | head -n "$N" | cut -f1 > "$OUT/train_$N.txt"
for input in dev train; do
  if [ $input = dev ]; then args=(--input="$SHARED/data/SST-2/dev.tsv" --label_field=label)
  else args=(--input="$OUT/train_$N.txt"); fi
  for policy in op never; do
    pol=(); [ $policy = never ] && pol=(--policy=never)
    cache=$(mktemp -d)
    for temp in cold warm; do
      echo "=== $input $policy $temp (load $(cut -d' ' -f1-3 /proc/loadavg))"
      JAXIT_CACHE_DIR=$cache jaxit predict --workdir="$RUN" "${args[@]}" "${pol[@]}" \
        --output="$OUT/${input}_${policy}.jsonl" --summary="$OUT/${input}_${policy}_${temp}.json" \
        2>&1 | grep -v "predict:"
    done
    rm -rf "$cache"
  done
done
python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'input':6} {'policy':6} {'cache':5} {'ex/s':>7} {'compile s':>9} {'ex/s after':>10} "
      f"{'exit':>5} {'FLOPs x':>7} {'acc':>7}")
for f in sorted(out.glob("*_*_*.json")):
    inp, pol, temp = f.stem.split("_")
    s = json.loads(f.read_text())
    print(f"{inp:6} {pol:6} {temp:5} {s['examples_per_second']:7.1f} {s['compile_seconds']:9.2f} "
          f"{s['examples_per_second_after_compile']:10.1f} {s['avg_exit_layer']:5.2f} "
          f"{s['flops_speedup']:7.2f} {s.get('accuracy', float('nan')):7.4f}")
PY
