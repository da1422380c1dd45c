#!/usr/bin/env bash
# Sets up kitt on a fresh machine: builds the release binary. Idempotent: a
# second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building kitt (release)"
cargo build --release --locked --bin kitt
echo "==> kitt is at $(pwd)/target/release/kitt"
