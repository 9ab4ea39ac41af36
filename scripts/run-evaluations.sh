#!/usr/bin/env bash
# The evaluation runs behind docs/results/: every method on the three datasets, for SmolLM2 and
# Gemma-3-270m, on a 2-core CPU. Subset sizes and the ReAGent step cap are chosen to fit that
# machine (see docs/results/README.md). Each run resumes if interrupted; rerunning this script
# after it finished only rewrites the summaries.
#
#   scripts/run-evaluations.sh [smollm2|gemma3|all]
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
bin=target/release/reagent
[ -x "$bin" ] || cargo build --release

# ReAGent: the paper's token-level setting (5 probes, keep 8, top-3, r = 0.1), but at most 100
# update steps per probe instead of the paper's 5000 (when no probe of a token has converged by
# then, the token gets inseq's fallback: the mean over all probes).
reagent_flags=(--preset paper-token --max-steps 100)

run() { # run <model file> <short name> <dataset> <limit>
  local model="models/$1" name="$2" dataset="$3" limit="$4"
  local out="docs/results/$name-$(basename "${dataset%.*}")"
  echo "== $out"
  "$bin" evaluate -m "$model" --dataset "$dataset" --methods all --limit "$limit" \
    "${reagent_flags[@]}" --out "$out" -q
}

if [[ "$which" == smollm2 || "$which" == all ]]; then
  run SmolLM2-135M-Instruct.Q4_1.gguf smollm2 data/longra.jsonl 6
  run SmolLM2-135M-Instruct.Q4_1.gguf smollm2 data/wikibio.txt 1
  run SmolLM2-135M-Instruct.Q4_1.gguf smollm2 data/tellmewhy.txt 1
fi
if [[ "$which" == gemma3 || "$which" == all ]]; then
  run gemma-3-270m-q4_k_m.gguf gemma3 data/longra.jsonl 3
  run gemma-3-270m-q4_k_m.gguf gemma3 data/wikibio.txt 1
  run gemma-3-270m-q4_k_m.gguf gemma3 data/tellmewhy.txt 1
fi
