#!/usr/bin/env bash
# Your own task from files, end to end (issue #16): CSVs written the way AG News is
# distributed (UTF-8 BOM, Kaggle header "Class Index","Title","Description", every field
# quoted, CRLF line ends, classes numbered from 1, newlines inside quoted fields), built from
# a real shared data set, IMDB/test_subset.tsv (2,000 reviews): class 1 = negative,
# 2 = positive, Title = the review's first sentence, Description = the rest, with its
# "<br /><br />" paragraph breaks turned into newlines. 1,400 train / 300 dev / 300 test.
# Then `jaxit data`, `jaxit train` (MiniLM-L6, BERxiT Alternating, a few hundred steps),
# `jaxit sweep` and `jaxit predict` on the test CSV with its gold labels.
# Usage: bash experiments/real_data/custom_csv.sh [OUT_DIR (default /tmp/jaxit_custom_csv)]
set -eu
OUT=${1:-/tmp/jaxit_custom_csv}
STEPS=${STEPS:-300}
SHARED=${JAXIT_SHARED:-../shared}
mkdir -p "$OUT"
python - "$SHARED/data/IMDB/test_subset.tsv" "$OUT" <<'EOF'
import csv, re, sys
src, out = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8", newline="") as f:
    lines = f.read().split("\n")
rows = [ln.split("\t") for ln in lines[1:] if ln]
def split(review):
    m = re.search(r"[.!?](\s|<br)", review[:200])
    cut = m.end(0) - len(m.group(1)) if m else min(len(review), 60)
    title, rest = review[:cut].strip(), review[cut:].strip()
    return title, re.sub(r"(\s*<br\s*/?>\s*)+", "\n", rest).strip() or title
for name, part in (("train", rows[:1400]), ("dev", rows[1400:1700]), ("test", rows[1700:])):
    with open(f"{out}/{name}.csv", "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(["Class Index", "Title", "Description"])
        for sentence, label, _ in part:
            w.writerow([int(label) + 1, *split(sentence)])
    print(f"{out}/{name}.csv: {len(part)} rows")
EOF
DATA=(--config.task=custom --config.data.train_file="$OUT/train.csv"
      --config.data.dev_file="$OUT/dev.csv" --config.data.test_file="$OUT/test.csv"
      --config.data.text_fields=Title+Description --config.data.label_field="Class Index"
      --config.data.labels=negative,positive)
CFG=(--config=experiments/configs/finetune.py --config.model="$SHARED/models/all-MiniLM-L6-v2"
     "${DATA[@]}")
echo "=== jaxit data $(date)"
jaxit data "${CFG[@]}"
echo "=== jaxit train $(date)"
jaxit train "${CFG[@]}" --workdir="$OUT/run" --config.method.name=berxit \
  --config.method.pooling=mean --config.method.exits_lr_scale=20 \
  --config.train.learning_rate=5e-5 --config.train.batch_size=16 \
  --config.train.num_steps="$STEPS" --config.eval_every=100 --config.save_every=100 \
  --config.keep_checkpoints=1 --config.progress=False
echo "=== jaxit sweep $(date)"
jaxit sweep --workdir="$OUT/run" --policies=confidence,entropy --wallclock_examples=100
echo "=== jaxit predict $(date)"
jaxit predict --workdir="$OUT/run" --input="$OUT/test.csv" \
  --label_field="Class Index" --output="$OUT/test_predictions.jsonl" \
  --summary="$OUT/test_summary.json"
head -c 600 "$OUT/test_predictions.jsonl"; echo
echo "=== custom_csv.sh done $(date)"
