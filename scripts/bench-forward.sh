#!/usr/bin/env bash
# Side-by-side forward benchmark, alternating reagent and transformers on the same machine:
# SmolLM2-135M-Instruct (the GGUF dequantized), batch 16 x 48, last-position log-probs, in f32
# and in bf16 on both sides (reagent --precision bf16 where the CPU has AVX512-BF16; torch's
# bfloat16 through oneDNN), torch with SDPA and eager attention.
#   [THREADS=2] [PYTHON=python3] scripts/bench-forward.sh [rounds] [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; iters="${2:-10}"; PY="${PYTHON:-python3}"; T="${THREADS:-2}"
cargo bench --bench forward --no-run -q 2>/dev/null
grep -m1 'model name' /proc/cpuinfo
echo "flags: $(grep -m1 -o -w 'avx2\|avx512f\|avx512_bf16\|amx_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
bf16=$(grep -q -w avx512_bf16 /proc/cpuinfo && echo yes || echo no)
for r in $(seq "$rounds"); do
  echo "round $r"
  RAYON_NUM_THREADS="$T" cargo bench -q --bench forward -- "$iters" 2>/dev/null | grep median
  [ "$bf16" = yes ] && RAYON_NUM_THREADS="$T" PRECISION=bf16 cargo bench -q --bench forward -- "$iters" 2>/dev/null | grep median
  for dt in float32 bfloat16; do
    for attn in sdpa eager; do
      THREADS="$T" DTYPE=$dt ATTN=$attn OMP_NUM_THREADS="$T" "$PY" scripts/bench_forward.py "$iters" 2>/dev/null | grep median
    done
  done
done
