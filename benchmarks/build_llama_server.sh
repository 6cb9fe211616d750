#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp that the installed llama-cpp-python vendors
# (its source distribution on PyPI), into benchmarks/build/llama-server. About 10 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(python -c 'import llama_cpp; print(llama_cpp.__version__)')"
work="$here/build/src"
mkdir -p "$work"
if [ ! -d "$work/llama_cpp_python-$version" ]; then
    python -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" --quiet
    tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
fi
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$src" -B "$here/build/cmake" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON > "$here/build/cmake.log"
cmake --build "$here/build/cmake" --target llama-server -j"$(nproc)" >> "$here/build/cmake.log"
cp "$here/build/cmake/bin/llama-server" "$here/build/llama-server"
echo "$here/build/llama-server"
