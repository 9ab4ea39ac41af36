#!/usr/bin/env bash
# Throughput of one seeded ReAGent job, side by side on this machine: local f32 and
# --quantized (and both in bf16 where the CPU has AVX512-BF16), and llama.cpp's llama-server on
# the same GGUF file at --concurrency 1, 2, 4, 8.
# Every configuration runs the same 4 prompts (one target token each, the paper's token preset,
# at most 100 steps, seed 0); the table gives attributed tokens per second, forward rows per
# second (tokens differ in step counts; rows do not lie), requests per token and the cache's
# hit rate. Output: a Markdown table on stdout (docs/results/speed.md keeps one).
#
#   scripts/bench-remote.sh [THREADS]      # THREADS for the local runs and the server (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
bin=target/release/reagent
[ -x "$bin" ] || cargo build --release
server="$(scripts/build-llama-server.sh)"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
work="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$server" -m "$model" --host 127.0.0.1 --port "$port" -np 8 -c 16384 -t "$threads" --no-webui \
  >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
cat >"$work/jobs.jsonl" <<'JOBS'
{"prompt": "The Eiffel Tower is a famous landmark in the city of", "target": " Paris"}
{"prompt": "My cousin moved to France last year. She now lives in the capital city,", "target": " Paris"}
{"prompt": "Monday, Tuesday, Wednesday,", "target": " Thursday"}
{"prompt": "The capital of Japan is", "target": " Tokyo"}
JOBS
common=(attribute --input "$work/jobs.jsonl" --preset paper-token --max-steps 100 --seed 0 -q)
row() { # row <label> <args...>
  local label="$1"
  shift
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" --threads "$threads" "${common[@]}" --json "$work/out.jsonl" "$@" >/dev/null
  t1=$(date +%s.%N)
  python3 - "$label" "$t0" "$t1" "$work/out.jsonl" <<'PY'
import json, sys
label, t0, t1, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ts = [t for line in open(path) if line.strip() for t in json.loads(line)["targets"]]
wall = t1 - t0
rows = sum(t.get("forward_rows", 0) for t in ts)
b = [t["backend"] for t in ts if "backend" in t]
req = sum(x["requests"] for x in b); asked = sum(x["rows"] for x in b); hits = sum(x["cache_hits"] for x in b)
extra = f"| {req / len(ts):.0f} | {100 * hits / max(asked, 1):.1f} %" if b else "| - | -"
steps = "/".join(str(t.get("steps")) for t in ts)
print(f"| {label} | {len(ts) / wall:.3f} | {rows / wall:.1f} | {steps} {extra} | {wall:.1f} |")
PY
}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores; $(grep -qw avx512f /proc/cpuinfo && echo AVX-512 || echo AVX2)); $threads threads; $(date -u +%Y-%m-%d)"
echo
echo "| backend | tokens/s | forward rows/s | steps per token | requests per token | cache hits | wall s |"
echo "|---|---:|---:|---|---:|---:|---:|"
row "local f32" -m "$model" --precision f32
row "local --quantized (f32)" -m "$model" --quantized --precision f32
if grep -qw avx512_bf16 /proc/cpuinfo; then
  row "local bf16" -m "$model" --precision bf16
  row "local --quantized (bf16)" -m "$model" --quantized --precision bf16
fi
for c in 1 2 4 8; do
  row "llama-server, --concurrency $c" -m "http://127.0.0.1:$port/v1" --tokenizer "$model" --concurrency "$c"
done
