#!/usr/bin/env bash
# Prompt throughput, side by side and alternating: llama.cpp's own `llama-bench` (built for this
# CPU from the llama.cpp sources PyPI's llama-cpp-python vendors) against `reagent`'s forward
# benchmark, on the same SmolLM2 Q4_1 GGUF file and thread count.
#
#   THREADS=2 scripts/bench-llama-cpp.sh [ROUNDS]
#
# llama-bench processes one sequence of 48 and one of 768 tokens (pp48, pp768; logits at the
# last position); `reagent` runs the batch ReAGent runs, 16 contexts x 48 tokens = 768 tokens,
# last-position log-probabilities, dense bf16 (auto on AVX512-BF16 CPUs) and quantized. Both are
# reported in tokens per second.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
threads="${THREADS:-2}"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || scripts/fetch-models.sh
bench="$(TARGET=llama-bench NATIVE=1 scripts/build-llama-server.sh)"
cargo bench --bench forward --no-run 2>/dev/null
ours="$(ls -t target/release/deps/forward-* | grep -v '\.d$' | head -1)"
grep -m1 'model name' /proc/cpuinfo
echo "threads $threads"
for r in $(seq "$rounds"); do
  echo "== round $r"
  "$bench" -m "$model" -p 48,768 -n 0 -t "$threads" -r 5 2>/dev/null | grep ' pp'
  # dense bf16, quantized weights with bf16 products, dense f32
  for config in "PRECISION=bf16" "PRECISION=bf16 QUANTIZED=1" "PRECISION=f32"; do
    # shellcheck disable=SC2086
    line="$(env RAYON_NUM_THREADS="$threads" $config "$ours" 10)"
    ms="$(echo "$line" | sed -E 's/.*median ([0-9.]+) ms.*/\1/')"
    echo "$line  => $(awk -v ms="$ms" 'BEGIN { printf "%.0f tokens/s", 768 / (ms / 1000) }')"
  done
done
