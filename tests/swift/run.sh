#!/usr/bin/env bash
# Build the Swift package (bindings/swift/build.sh), then compile and run the Swift tests
# inside the Swift root (Debian trixie, see bindings/swift/root.sh).
#   bash tests/swift/run.sh            the tests; the last line is "N passed, M failed"
#   bash tests/swift/run.sh --bench    the tests, then put+get timings per message
set -euo pipefail
cd "$(dirname "$0")/../.."
bash bindings/swift/build.sh
rootsh="bash bindings/swift/root.sh"
work=$($rootsh path)/work/sage-queue
mkdir -p "$work/tests" "$work/bin"
cp tests/swift/*.swift "$work/tests/"
stamp=$(cat tests/swift/*.swift "$work/lib/module.stamp" | sha256sum | cut -c1-16)
if [ "$(cat "$work/bin/tests.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$work/bin/sage-queue-tests" ]; then
    echo "[swift] compiling the tests" >&2
    rm -f "$work/bin/tests.stamp"
    mapfile -t sources < <(cd tests/swift && printf 'tests/%s\n' *.swift)
    # shellcheck disable=SC2016  # $ORIGIN is for the linker
    $rootsh run swiftc -O -I lib -L lib -lSageQueueFFI -lsage_queue \
        -Xcc -fmodule-map-file=gen/sage_queueFFI.modulemap \
        -Xlinker -rpath -Xlinker '$ORIGIN/../lib' \
        "${sources[@]}" -o bin/sage-queue-tests
    echo "$stamp" >"$work/bin/tests.stamp"
fi
exec $rootsh run bin/sage-queue-tests "$@"
