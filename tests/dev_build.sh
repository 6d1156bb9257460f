#!/usr/bin/env bash
# Build the Rust library and generate the Python module in place, for working on the shim
# without building a wheel:  bash tests/dev_build.sh && PYTHONPATH=python python3 -m pytest
# PROFILE=dev for a debug build (default: release).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
if [ "$profile" = dev ]; then dir=debug; flag=""; else dir=release; flag="--release"; fi
cargo build $flag --lib --bin uniffi-bindgen
out=python/sage_queue/_native
mkdir -p "$out"
"target/$dir/uniffi-bindgen" generate --library "target/$dir/libsage_queue.so" \
    --language python --out-dir "$out" --no-format >/dev/null
# Replace the library by rename, never in place: a process that has it loaded keeps its copy.
cp "target/$dir/libsage_queue.so" "$out/.libsage_queue.so.new"
mv -f "$out/.libsage_queue.so.new" "$out/libsage_queue.so"
printf 'from .sage_queue import *  # noqa: F401,F403\n' > "$out/__init__.py"
echo "generated $out"
