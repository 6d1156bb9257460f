#!/usr/bin/env bash
# Build the Swift package (bindings/swift/Package.swift) inside the Swift root:
#
#   bash bindings/swift/build.sh
#
# 1. cargo build --release: target/release/libsage_queue.so and the crate's uniffi-bindgen;
# 2. generate the Swift bindings from the library (never committed; a file is rewritten only
#    when its text changed, so swift build recompiles only what changed):
#      Sources/SageQueueFFIRaw/sage_queueFFI.h, module.modulemap     (module SageQueueFFIRaw)
#      Sources/SageQueueFFI/Generated/SageQueueFFI.swift             (module SageQueueFFI)
# 3. swift build -c release --build-tests in bindings/swift, in the root: the module
#    SageQueueFFI, the interop peer, the benchmark and the tests, in bindings/swift/.build/release
#    (with the tests, so that `swift test -c release --skip-build` rebuilds nothing: swift test
#    and a plain swift build -c release build the module with different flags).
#
# The compiler is Debian trixie's swiftlang (Swift 6) in a root kept in .cache/swift (see
# root.sh; made on first use, ~3 min), which sees this repository at its own path. After this,
# `swift build` and `swift test` work in the package: bash bindings/swift/root.sh run -C
# bindings/swift swift test (tests/swift/run.sh runs the tests).
set -euo pipefail
cd "$(dirname "$0")/../.."
pkg=bindings/swift
rootsh="bash $pkg/root.sh"

say() { printf '[swift] %s\n' "$*" >&2; }

$rootsh ensure

# ---- native library and generated sources ----

cargo build --release --lib --bin uniffi-bindgen
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
# uniffi-bindgen runs `cargo metadata`, so it runs from the crate root.
target/release/uniffi-bindgen generate --library target/release/libsage_queue.so --language swift \
    --out-dir "$gen" --no-format >/dev/null
place() {
    mkdir -p "$(dirname "$2")"
    cmp -s "$1" "$2" || cp "$1" "$2"
}
place "$gen/sage_queueFFI.h" "$pkg/Sources/SageQueueFFIRaw/sage_queueFFI.h"
place "$gen/sage_queueFFI.modulemap" "$pkg/Sources/SageQueueFFIRaw/module.modulemap"
place "$gen/SageQueueFFI.swift" "$pkg/Sources/SageQueueFFI/Generated/SageQueueFFI.swift"

# ---- the package ----

# What earlier versions of this script left in the root (a module built by hand) goes.
rm -rf "$($rootsh path)/work/sage-queue/"{gen,lib,src,tests,bin/sage-queue-tests,bin/tests.stamp}
say "swift build -c release --build-tests (in the root)"
$rootsh run -C "$pkg" swift build -c release --build-tests
