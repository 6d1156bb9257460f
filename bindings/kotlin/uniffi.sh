#!/usr/bin/env bash
# Run by the Maven build (pom.xml, phase generate-sources); not meant to be run by hand.
#
#   bash uniffi.sh TARGET_DIR
#
# 1. cargo build --release --lib --bin uniffi-bindgen in the repository root (cargo's own
#    target directory, $CARGO_TARGET_DIR or <root>/target: the one the rest of the repository
#    uses; a no-op when the library is up to date, a build when it is missing or stale);
# 2. generates the Kotlin bindings from the library (its embedded UDL metadata) into
#    TARGET_DIR/generated-sources/uniffi (compiled with src/main/kotlin);
# 3. copies the library (debug info stripped) to TARGET_DIR/native/<JNA prefix>/, which the
#    pom adds to the jar's resources: linux-x86-64/libsage_queue.so, where JNA looks for it
#    on the class path.
# SAGE_QUEUE_CARGO=skip uses the library as it is (fails if it is missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: uniffi.sh TARGET_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"
cargo_target=${CARGO_TARGET_DIR:-$root/target}
case "$cargo_target" in /*) ;; *) cargo_target=$root/$cargo_target ;; esac
lib=$cargo_target/release/libsage_queue.so
bindgen=$cargo_target/release/uniffi-bindgen

if [ "${SAGE_QUEUE_CARGO:-}" != skip ]; then
    command -v cargo >/dev/null || { echo "[sage-queue] cargo not found: install Rust stable (rustup)" >&2; exit 1; }
    [ -f "$lib" ] || echo "[sage-queue] building the native library (cargo build --release, a few minutes)" >&2
    cargo build --quiet --release --lib --bin uniffi-bindgen
fi
[ -f "$lib" ] && [ -x "$bindgen" ] || { echo "[sage-queue] $lib or $bindgen is missing" >&2; exit 1; }

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) prefix=linux-x86-64 ;;
    Linux-aarch64 | Linux-arm64) prefix=linux-aarch64 ;;
    *) echo "[sage-queue] unsupported platform $(uname -s)-$(uname -m) (Linux x86-64 and aarch64 only)" >&2; exit 1 ;;
esac

# Generated sources: replaced only when they change (their time stamp then says so).
gen=$out/generated-sources/uniffi
tmp=$out/uniffi-tmp
rm -rf "$tmp" && mkdir -p "$tmp"
# uniffi-bindgen runs `cargo metadata`, so it runs from the crate root.
"$bindgen" generate --library "$lib" --language kotlin --out-dir "$tmp" --no-format >/dev/null
if ! diff -r -q "$tmp" "$gen" >/dev/null 2>&1; then
    rm -rf "$gen" && mkdir -p "$(dirname "$gen")" && mv "$tmp" "$gen"
else
    rm -rf "$tmp"
fi

# The native library, where JNA's class-path lookup finds it.
native=$out/native/$prefix
mkdir -p "$native"
strip --strip-debug -o "$native/.libsage_queue.so.new" "$lib" 2>/dev/null \
    || cp "$lib" "$native/.libsage_queue.so.new"
if cmp -s "$native/.libsage_queue.so.new" "$native/libsage_queue.so"; then
    rm -f "$native/.libsage_queue.so.new"
else
    mv -f "$native/.libsage_queue.so.new" "$native/libsage_queue.so"
fi
