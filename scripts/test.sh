#!/usr/bin/env bash
# The project's test command (README, and .ci/run): fetch the real models if they are missing
# (quick when present) and llama.cpp's server (built once from PyPI's llama-cpp-python sources,
# then cached), then run every test in release mode, and the Python package's tests (the model tests need optimised
# code; release is also what the main command builds, so nothing is compiled twice).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
# The remote backend's tests start this real server on the SmolLM2 file.
REAGENT_LLAMA_SERVER="$(scripts/build-llama-server.sh)"
export REAGENT_LLAMA_SERVER
# The models were just fetched: a real-model test that finds one missing fails rather than skips.
export REAGENT_REQUIRE_MODELS=1
cargo test --release --workspace --exclude reagent-py "$@"
# The Python package (maturin, numpy, pytest from PyPI), against the CLI just built.
scripts/test-python.sh
