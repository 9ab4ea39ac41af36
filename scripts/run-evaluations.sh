#!/usr/bin/env bash
# The evaluation runs behind docs/results/, on a 2-core CPU. Each run resumes where it stopped
# (rerun the same stage after an interruption); a finished run only rewrites its summary.
#
#   scripts/run-evaluations.sh STAGE [MODEL]       MODEL: smollm2 (default) or gemma3
#
# Stages:
#   longra      every baseline and the perturbation variants of ReAGent on the usable LongRA rows
#               (at most 30): the like-for-like comparison
#   reference   the reference ReAGent (paper-token preset) and its recursion variants on the first
#               10 usable LongRA rows, with a step cap
#   wikibio, tellmewhy
#               the same methods as `longra` on 10 prompts x 10 generated tokens
#   erasure     the leading methods of `longra` again, on the same rows, for the erasure metrics
#               (tokens dropped; runs before them have the paper's metrics only)
#
# BIN=path overrides the binary (run long stages from a copy, so that rebuilding does not
# disturb them); THREADS sets --threads. While a stage runs (or after it was stopped),
# `reagent summarize DIR` writes the summary of what is there and `reagent report DIR` the page
# with figures.
set -euo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: scripts/run-evaluations.sh longra|reference|wikibio|tellmewhy|erasure [smollm2|gemma3]}"
model="${2:-smollm2}"
bin="${BIN:-target/release/reagent}"
[ -x "$bin" ] || cargo build --release
case "$model" in
  smollm2) file=models/SmolLM2-135M-Instruct.Q4_1.gguf ;;
  gemma3) file=models/gemma-3-270m-q4_k_m.gguf ;;
  *) echo "unknown model $model" >&2; exit 2 ;;
esac
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")

# The perturbation variants, each 16 probes x 8 update steps (128 perturbed contexts per token,
# no stopping test: the pooled read-outs do not need one).
budget="probes=16,max_steps=8,min_steps=8"
variants=(
  --variant "reagent-maskdiff:readout=mask_diff,replacing_ratio=0.1,$budget"
  --variant "reagent-maskdiff-r03:readout=mask_diff,replacing_ratio=0.3,$budget"
  --variant "reagent-regression:readout=regression,replacing_ratio=0.1,$budget"
  --variant "reagent-context:readout=mask_diff,sampler=context,replacing_ratio=0.1,$budget"
  --variant "reagent-adaptive:readout=mask_diff,adaptive_ratio=true,replacing_ratio=0.3,$budget"
  --variant "reagent-shrunk:readout=mask_diff,shrink_z=2,replacing_ratio=0.1,$budget"
)
baselines=gradient_norm,input_x_gradient,integrated_gradients,gradient_shap,attention,last_layer_attention,attention_rollout,occlusion,random

run() { # run <dataset> <out> <limit> <args...>
  local dataset="$1" out="$2" limit="$3"
  shift 3
  echo "== $out ($(date -u +%H:%M:%S))"
  local t0=$SECONDS
  "$bin" "${threads[@]}" evaluate -m "$file" --dataset "$dataset" --limit "$limit" --out "$out" -q "$@"
  echo "== $out done in $((SECONDS - t0)) s"
}

case "$stage" in
  longra)
    # reagent-shrunk-512: the recommended read-out at four times the budget (16 probes x 32
    # steps, 512 contexts per token), still far below the reference's forwards per token;
    # reagent-context-shrunk the shrunk read-out on the in-context sampler; reagent-shrunk-z3 a
    # stricter shrinkage at 128 contexts, and reagent-shrunk-512-z4 the threshold of z = 2 at 128
    # contexts kept in effect size at 512 (standard errors halve at four times the samples, so
    # z doubles).
    run data/longra.jsonl "docs/results/$model-longra" 30 --methods "$baselines" "${variants[@]}" \
      --variant "reagent-shrunk-512:readout=mask_diff,shrink_z=2,replacing_ratio=0.1,probes=16,max_steps=32,min_steps=32" \
      --variant "reagent-context-shrunk:readout=mask_diff,sampler=context,shrink_z=2,replacing_ratio=0.1,$budget" \
      --variant "reagent-shrunk-z3:readout=mask_diff,shrink_z=3,replacing_ratio=0.1,$budget" \
      --variant "reagent-shrunk-512-z4:readout=mask_diff,shrink_z=4,replacing_ratio=0.1,probes=16,max_steps=32,min_steps=32" ;;
  erasure)
    run data/longra.jsonl "docs/results/$model-longra-erasure" 30 --no-stability \
      --methods gradient_norm,input_x_gradient,integrated_gradients,occlusion,random \
      --variant "reagent-maskdiff:readout=mask_diff,replacing_ratio=0.1,$budget" \
      --variant "reagent-shrunk:readout=mask_diff,shrink_z=2,replacing_ratio=0.1,$budget" ;;
  wikibio | tellmewhy)
    run "data/$stage.txt" "docs/results/$model-$stage" 10 --new-tokens 10 --methods "$baselines" "${variants[@]}" ;;
  reference)
    # The paper's token-level preset (5 probes, keep 8, top-3, r = 0.1) capped at 100 steps, and
    # the variants of its recursion, each one flag away from it. (inseq's default preset, 16
    # probes and r = 0.3, converged no probe in 300 steps on the first LongRA row: 18 minutes.)
    run data/longra.jsonl "docs/results/$model-longra-reference" 10 --methods reagent,random \
      --preset paper-token --max-steps 100 \
      --variant "reagent-minsteps:min_steps=20" \
      --variant "reagent-weighted:probe_weighting=steps" \
      --variant "reagent-anytime:stable_window=20" \
      --variant "reagent-tv:objective=total_variation" \
      --variant "reagent-causal:sampler=causal" \
      --variant "reagent-maskdiff-readout:readout=mask_diff" ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
