#!/usr/bin/env bash
# ReAGent speed: `reagent attribute` (this project) against inseq 0.7.1's ReAGent, same model
# (SmolLM2-135M-Instruct GGUF dequantized to f32), same hyperparameters, same thread count,
# runs alternating on the same machine. Two modes:
#
#   per-step  one forced target token that never satisfies the stopping test, so every
#             probe runs exactly --max-steps steps: seconds per update step.
#             Prompt: LongRA row $PER_STEP_ROW; target $PER_STEP_TARGET (" refrigerator",
#             p ~ 1e-8, rank ~44k of 49k after that prompt; `reagent attribute --max-steps 3`
#             and inseq both report 0/16 probes converged).
#   e2e       the LongRA rows $ROWS with their own targets (forced), run to convergence
#             (inseq's defaults: at most $E2E_STEPS steps): seconds per target token.
#
# Usage: scripts/compare-speed.sh [per-step|e2e|both]          (default both)
# Environment (defaults in brackets):
#   PYTHON [/work/pyref/bin/python]   Python with torch, transformers, captum
#   INSEQ_PYTHONPATH [/tmp/inseq_site] prepended to PYTHONPATH for the inseq script
#   REAGENT [target/release/reagent]  MODEL [models/SmolLM2-135M-Instruct.Q4_1.gguf]
#   LONGRA [data/longra.jsonl]
#   ROWS [capital-common-countries-0,capital-world-17,currency-14]
#       rows whose target SmolLM2-135M-Instruct predicts greedily (every target token is the
#       argmax, checked with transformers on the dequantized GGUF): 1, 3 and 2 target tokens,
#       prompts of 42, 42 and 52 tokens
#   PER_STEP_ROW [capital-common-countries-0]  PER_STEP_TARGET [" refrigerator"]
#   PER_STEP_STEPS [20]  E2E_STEPS [3000]  ROUNDS [1]  THREADS [2]  SEED [42]
#   PROBES [16]  KEEP_TOP_N [5]  STOP_TOP_K [3]  REPLACING_RATIO [0.3]
#   OUT [a new mktemp -d folder]: raw JSON of every run is kept there
#   INSEQ_ARGS [""]: extra flags for scripts/inseq_reagent.py (e.g. "--attn sdpa --dtype bfloat16")
#   REAGENT_ARGS [""]: extra flags for reagent attribute (e.g. "--precision f32"; the default,
#       auto, runs bf16 where the CPU has AVX512-BF16)
# inseq's POS sampler needs its cache pickle: see scripts/inseq_pos_cache.py.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-both}"
case "$mode" in per-step|e2e|both) ;; *) echo "usage: $0 [per-step|e2e|both]" >&2; exit 2 ;; esac
PY="${PYTHON:-/work/pyref/bin/python}"
INSEQ_PYTHONPATH="${INSEQ_PYTHONPATH:-/tmp/inseq_site}"
REAGENT="${REAGENT:-target/release/reagent}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LONGRA="${LONGRA:-data/longra.jsonl}"
ROWS="${ROWS:-capital-common-countries-0,capital-world-17,currency-14}"
PER_STEP_ROW="${PER_STEP_ROW:-capital-common-countries-0}"
PER_STEP_TARGET="${PER_STEP_TARGET:- refrigerator}"
PER_STEP_STEPS="${PER_STEP_STEPS:-20}"
E2E_STEPS="${E2E_STEPS:-3000}"
ROUNDS="${ROUNDS:-1}"
THREADS="${THREADS:-2}"
SEED="${SEED:-42}"
PROBES="${PROBES:-16}"; KEEP_TOP_N="${KEEP_TOP_N:-5}"; STOP_TOP_K="${STOP_TOP_K:-3}"
REPLACING_RATIO="${REPLACING_RATIO:-0.3}"
OUT="${OUT:-$(mktemp -d -t compare-speed.XXXXXX)}"
INSEQ_ARGS="${INSEQ_ARGS:-}"
REAGENT_ARGS="${REAGENT_ARGS:-}"
mkdir -p "$OUT"
[ -x "$REAGENT" ] || { echo "no $REAGENT: build it with cargo build --release" >&2; exit 1; }

hyper=(--probes "$PROBES" --keep-top-n "$KEEP_TOP_N" --stop-top-k "$STOP_TOP_K"
       --replacing-ratio "$REPLACING_RATIO" --seed "$SEED")

# Jobs for `reagent attribute --input`: one {"prompt", "target"} line per row, ids kept.
"$PY" - "$LONGRA" "$ROWS" "$PER_STEP_ROW" "$PER_STEP_TARGET" "$OUT" <<'EOF'
import json, sys
longra, rows, ps_row, ps_target, out = sys.argv[1:]
data = {}
for line in open(longra, encoding="utf-8"):
    if line.strip():
        r = json.loads(line); data[r["id"]] = r
def job(i, target=None):
    if i not in data:
        sys.exit(f"row {i!r} not in {longra}")
    return {"id": i, "prompt": data[i]["prompt"], "target": target or data[i]["target"]}
with open(f"{out}/e2e-jobs.jsonl", "w", encoding="utf-8") as f:
    for i in rows.split(","):
        f.write(json.dumps(job(i.strip())) + "\n")
with open(f"{out}/per-step-jobs.jsonl", "w", encoding="utf-8") as f:
    f.write(json.dumps(job(ps_row, ps_target)) + "\n")
EOF

run_ours() {  # mode steps round
  local log="$OUT/$1-ours-$3"
  echo "  reagent attribute ($1, max-steps $2)" >&2
  # shellcheck disable=SC2086
  RAYON_NUM_THREADS="$THREADS" "$REAGENT" attribute -m "$MODEL" --threads "$THREADS" \
    --input "$OUT/$1-jobs.jsonl" --max-steps "$2" "${hyper[@]}" --json "$log.json" -q $REAGENT_ARGS \
    >"$log.stdout" 2>"$log.stderr" || { cat "$log.stderr" >&2; exit 1; }
}

run_inseq() {  # mode steps round
  local log="$OUT/$1-inseq-$3"
  echo "  inseq reagent ($1, max-steps $2)" >&2
  local src
  if [ "$1" = per-step ]; then src=(--longra "$OUT/per-step-jobs.jsonl" --ids "$PER_STEP_ROW")
  else src=(--longra "$LONGRA" --ids "$ROWS"); fi
  # shellcheck disable=SC2086
  PYTHONPATH="$INSEQ_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="$THREADS" \
    "$PY" scripts/inseq_reagent.py "${src[@]}" --max-steps "$2" --threads "$THREADS" \
    "${hyper[@]}" $INSEQ_ARGS >"$log.jsonl" 2>"$log.stderr" || { cat "$log.stderr" >&2; exit 1; }
}

modes=()
[ "$mode" = e2e ] || modes+=(per-step)
[ "$mode" = per-step ] || modes+=(e2e)
echo "results in $OUT" >&2
for r in $(seq "$ROUNDS"); do
  for m in "${modes[@]}"; do
    steps=$PER_STEP_STEPS; [ "$m" = e2e ] && steps=$E2E_STEPS
    echo "round $r, $m" >&2
    # alternate which implementation goes first
    if [ $((r % 2)) = 1 ]; then run_ours "$m" "$steps" "$r"; run_inseq "$m" "$steps" "$r"
    else run_inseq "$m" "$steps" "$r"; run_ours "$m" "$steps" "$r"; fi
  done
done

"$PY" - "$OUT" "$ROUNDS" "$THREADS" "${modes[@]}" <<'EOF'
import json, sys
out, rounds, threads, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]

def ours(path):  # one JSON object per job line
    toks = []
    for line in open(path, encoding="utf-8"):
        if line.strip():
            toks += [(t["wall_s"], t["steps"], t["converged_probes"]) for t in json.loads(line)["targets"]]
    return toks

def inseq(path):
    return [(d["wall_s"], d["steps"], d["converged_probes"])
            for d in map(json.loads, open(path, encoding="utf-8")) if d.get("event") == "token"]

print(f"\nReAGent on SmolLM2-135M-Instruct (f32), {threads} threads, {rounds} round(s); raw JSON in {out}")
hdr = f"{'mode':<9} {'impl':<7} {'tokens':>6} {'steps':>6} {'conv':>5} {'s/step':>9} {'s/token':>9}"
print(hdr); print("-" * len(hdr))
warn = []
for m in modes:
    res = {}
    for impl, read, ext in (("reagent", ours, "json"), ("inseq", inseq, "jsonl")):
        toks = [t for r in range(1, rounds + 1) for t in read(f"{out}/{m}-{'ours' if impl == 'reagent' else 'inseq'}-{r}.{ext}")]
        wall, steps, conv = sum(t[0] for t in toks), sum(t[1] for t in toks), sum(t[2] for t in toks)
        res[impl] = (wall / steps if steps else float("nan"), wall / len(toks) if toks else float("nan"))
        print(f"{m:<9} {impl:<7} {len(toks):>6} {steps:>6} {conv:>5} {res[impl][0]:>9.4f} {res[impl][1]:>9.3f}")
        if m == "per-step" and conv:
            warn.append(f"warning: {impl} per-step run had {conv} converged probe(s); choose a "
                        "less likely PER_STEP_TARGET so that every step runs the full batch")
    (a, b), (c, d) = res["reagent"], res["inseq"]
    print(f"{m:<9} {'ratio':<7} {'':>6} {'':>6} {'':>5} {c / a:>8.2f}x {d / b:>8.2f}x   (inseq / reagent)")
print("steps and conv(erged probes) are summed over target tokens; s/step = wall / steps, "
      "s/token = wall / tokens, wall = per-token wall time (model loading excluded)")
if warn:
    print(*warn, sep="\n", file=sys.stderr)
EOF
