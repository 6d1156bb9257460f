#!/usr/bin/env bash
# Build the Swift package (bindings/swift/build.sh), then run its XCTest tests with
# `swift test` inside the Swift root (Debian trixie, see bindings/swift/root.sh).
#   bash tests/swift/run.sh            the tests (bindings/swift/Tests)
#   bash tests/swift/run.sh --bench    the tests, then the timings of sage-queue-bench (put+get,
#                                      loans and views of 1 MiB, async calls and round trips)
# Other arguments go to swift test (e.g. --filter QueueTests.testFifoOrderAndQsize).
set -euo pipefail
cd "$(dirname "$0")/../.."
bench=0
args=()
for a in "$@"; do
    if [ "$a" = --bench ]; then bench=1; else args+=("$a"); fi
done
bash bindings/swift/build.sh
run="bash bindings/swift/root.sh run -C bindings/swift"
$run swift test -c release --skip-build --disable-swift-testing ${args[@]+"${args[@]}"}
if [ "$bench" = 1 ]; then
    $run .build/release/sage-queue-bench
fi
