#!/usr/bin/env bash
# Side-by-side forward benchmark, alternating reagent and transformers on the same machine:
# SmolLM2-135M f32, batch 16 x 48, last-position log-probs, 2 threads.
#   scripts/bench-forward.sh [rounds] [iterations]    (PYTHON defaults to python3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; iters="${2:-10}"; PY="${PYTHON:-python3}"
cargo build --release --bench forward -q 2>/dev/null || cargo bench --bench forward --no-run -q
for r in $(seq "$rounds"); do
  echo "round $r"
  RAYON_NUM_THREADS=2 cargo bench -q --bench forward -- "$iters" 2>/dev/null | grep median
  OMP_NUM_THREADS=2 "$PY" scripts/bench_forward.py "$iters" 2>/dev/null | grep median
done
