#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp sources that PyPI's llama-cpp-python source
# package vendors, once, and cache the binary. Prints the binary's path.
#
#   scripts/build-llama-server.sh          # the cached binary, built first when missing
#   TARGET=llama-bench NATIVE=1 scripts/build-llama-server.sh
#                                          # llama.cpp's own benchmark, for this CPU's features
#                                          # (scripts/bench-llama-cpp.sh runs it)
#
# The cache lives in $REAGENT_CACHE (default ~/.cache/reagent). The build targets x86-64 with AVX2
# and FMA, not the build machine's own features, so a cached binary runs on any machine of this
# project's kinds (AMD Zen 3 to 5, Intel Sapphire Rapids). 24 minutes measured on 2 cores
# with an evaluation running on one of them.
set -euo pipefail
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$version.tar.gz"
cache="${REAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reagent}"
target="${TARGET:-llama-server}"
flavor=avx2
[ -n "${NATIVE:-}" ] && flavor=native
out="$cache/$target-$version-$flavor/$target"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "building $target ($flavor) from llama-cpp-python $version's vendored llama.cpp (tens of minutes on 2 cores)" >&2
curl -fsSL --retry 3 -o src.tar.gz "$url"
echo "$sha256  src.tar.gz" | sha256sum -c --quiet
tar xzf src.tar.gz
cmake=cmake
if ! command -v cmake >/dev/null; then
  python3 -m pip install --quiet cmake >&2
  # The wheel's console script may sit outside PATH; its binary folder is known to Python.
  command -v cmake >/dev/null || cmake="$(python3 -c 'import cmake; print(cmake.CMAKE_BIN_DIR)')/cmake"
fi
src="llama_cpp_python-$version/vendor/llama.cpp"
if [ "$flavor" = native ]; then
  cpu=(-DGGML_NATIVE=ON)
else
  cpu=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
fi
"$cmake" -S "$src" -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF "${cpu[@]}" \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >&2
"$cmake" --build build --target "$target" -j "$(nproc)" >&2
mkdir -p "$(dirname "$out")"
cp "build/bin/$target" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
