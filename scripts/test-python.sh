#!/usr/bin/env bash
# The Python package's tests (part of scripts/test.sh): build and install `reagent` with maturin
# into a virtual environment (target/py-venv, kept between runs; pip keeps the wheels it
# downloads), then run pytest against the command line built by the Rust tests.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-venv
# maturin's build hook runs the `maturin` the environment has.
export PATH="$PWD/$venv/bin:$PATH"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  "maturin>=1.9,<2" "pytest>=7" "numpy>=1.21" pandas tqdm
# `pip install ./crates/reagent-py` is the user's command; no build isolation, so the maturin
# just installed builds it, into the workspace's target folder (shared with cargo).
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation \
  --no-deps --force-reinstall ./crates/reagent-py
# The CLI the tests compare with (cargo's target folder may be elsewhere: CARGO_TARGET_DIR).
bin="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/reagent"
[ -x "$bin" ] || cargo build --release
REAGENT_BIN="$bin" "$venv/bin/python" -m pytest -q crates/reagent-py/tests "$@"
