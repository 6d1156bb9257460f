#!/usr/bin/env bash
# Build the Kotlin package (bindings/kotlin/build.sh), then compile and run the Kotlin tests.
#   bash tests/kotlin/run.sh            the tests; the last line is "N passed, M failed"
#   bash tests/kotlin/run.sh --bench    the tests, then put+get timings per message
set -euo pipefail
cd "$(dirname "$0")/../.."
bash bindings/kotlin/build.sh
out=bindings/kotlin/build
jar=$(cat "$out/jar-path")
cp=$(cat "$out/runtime-classpath")
KOTLINC=${KOTLINC:-$PWD/.cache/kotlin/node_modules/kotlin-compiler/bin/kotlinc}

# Compile the tests unless neither they nor the package changed since the last run.
stamp=$(cat tests/kotlin/*.kt "$out/classes.stamp" | sha256sum | cut -c1-16)
if [ "$(cat "$out/tests.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$out/tests" ]; then
    echo "[kotlin] compiling the tests" >&2
    rm -rf "$out/tests" "$out/tests.stamp"
    "$KOTLINC" -nowarn -cp "$jar:$cp" -d "$out/tests" tests/kotlin/*.kt
    echo "$stamp" > "$out/tests.stamp"
fi
exec java -cp "$out/tests:$jar:$cp" QueueTestsKt "$@"
