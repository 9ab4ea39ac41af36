#!/usr/bin/env bash
# Seconds per attributed token of integrated gradients (50 steps) and input x gradient:
# `reagent attribute --method ...` against inseq 0.7.1 (scripts/inseq_gradients.py), same model
# (SmolLM2-135M-Instruct, f32), same LongRA rows and targets, 2 threads, runs alternating.
#   scripts/compare-gradients.sh            (env: PYTHON, INSEQ_PYTHONPATH, ROWS, ROUNDS, OUT)
# Note: inseq's integrated gradients use the UNK-token baseline; ours is run with
# --ig-baseline unk here so both integrate along the same path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-/work/pyref/bin/python}"
INSEQ_PYTHONPATH="${INSEQ_PYTHONPATH:-/tmp/inseq_site}"
ROWS="${ROWS:-capital-common-countries-0,capital-world-17,currency-14}"
ROUNDS="${ROUNDS:-2}"
OUT="${OUT:-$(mktemp -d -t compare-gradients.XXXXXX)}"
mkdir -p "$OUT"
"$PY" - "$ROWS" "$OUT/jobs.jsonl" <<'PY'
import json, sys
ids = sys.argv[1].split(",")
rows = {r["id"]: r for r in map(json.loads, open("data/longra.jsonl"))}
with open(sys.argv[2], "w") as f:
    for i in ids:
        f.write(json.dumps({"prompt": rows[i]["prompt"], "target": rows[i]["target"]}) + "\n")
PY
for r in $(seq "$ROUNDS"); do
  for m in integrated_gradients input_x_gradient; do
    RAYON_NUM_THREADS=2 target/release/reagent attribute --input "$OUT/jobs.jsonl" --method "$m" \
      --ig-baseline unk -q --json "$OUT/ours-$m-$r.jsonl" > /dev/null
  done
  PYTHONPATH="$INSEQ_PYTHONPATH:scripts" "$PY" scripts/inseq_gradients.py --longra data/longra.jsonl \
    --ids "$ROWS" --threads 2 --no-scores > "$OUT/inseq-$r.jsonl" 2> "$OUT/inseq-$r.stderr"
done
"$PY" - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
ours, theirs = {}, {}
for f in glob.glob(f"{out}/ours-*.jsonl"):
    m = f.split("ours-")[1].rsplit("-", 1)[0]
    for line in open(f):
        ours.setdefault(m, []).extend(t["wall_s"] for t in json.loads(line)["targets"])
for f in glob.glob(f"{out}/inseq-*.jsonl"):
    for line in open(f):
        e = json.loads(line)
        if e.get("event") == "token":
            theirs.setdefault(e["method"], []).append(e["wall_s"])
print(f"seconds per attributed token (mean over {len(next(iter(ours.values())))} target tokens); raw data in {out}")
print(f"{'method':22} {'reagent':>9} {'inseq':>9} {'inseq/reagent':>14}")
for m in ("integrated_gradients", "input_x_gradient"):
    a, b = statistics.mean(ours[m]), statistics.mean(theirs[m])
    print(f"{m:22} {a:9.3f} {b:9.3f} {b / a:13.2f}x")
PY
