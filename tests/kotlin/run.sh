#!/usr/bin/env bash
# The Kotlin step of ./run.sh test: the Maven package io.sage:sage-queue and the example project.
#   bash tests/kotlin/run.sh          mvn install in bindings/kotlin (builds the Rust library if it
#                                     is missing or stale, generates the bindings, runs the JUnit
#                                     tests, installs the jar into ~/.m2), then builds and runs
#                                     bindings/kotlin/example against the installed artifact
#   bash tests/kotlin/run.sh --bench  the put+get benchmark (BenchTest) only, in µs per message
# The tests end with "kotlin: N passed, M failed, K skipped" (counted from Surefire's reports).
# Needs Maven 3.8+, Java 17+ and cargo; Maven fetches the rest from Maven Central.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v mvn >/dev/null || { echo "mvn not found: install Maven 3.8+ (apt-get install maven)"; exit 1; }
kt=bindings/kotlin
# Quiet Maven; Debian's Maven 3.8 prints stray color codes even in batch mode.
mvnq() { mvn -B -q "$@" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g; /^$/d'; }

if [ "${1:-}" = --bench ]; then
    mvnq -f "$kt/pom.xml" test -Dtest=BenchTest -Dsage.bench=true
    exit
fi

rm -rf "$kt/target/surefire-reports"
status=0
mvnq -f "$kt/pom.xml" install || status=$?
# VirtualThreadTest needs Java 21+ (it skips itself on Java 17): run it again on a newer JDK
# when the machine has one (the classes are Java 17 bytecode either way).
if [ "$status" = 0 ]; then
    for java in /usr/lib/jvm/*/bin/java; do
        major=$("$java" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p')
        if [ "${major:-0}" -ge 21 ]; then
            echo "[kotlin] VirtualThreadTest on Java $major ($java)"
            mvnq -f "$kt/pom.xml" surefire:test -Dtest=VirtualThreadTest -Djvm="$java" | { grep -v '^WARNING' || true; } || status=$?
            break
        fi
    done
fi
awk '
    function attr(s, n) { return match(s, n "=\"[0-9]+\"") ? substr(s, RSTART + length(n) + 2, RLENGTH - length(n) - 3) : 0 }
    match($0, /<testsuite [^>]*>/) {
        s = substr($0, RSTART, RLENGTH)
        t += attr(s, "tests"); f += attr(s, "failures") + attr(s, "errors"); k += attr(s, "skipped")
    }
    END { printf "kotlin: %d passed, %d failed, %d skipped\n", t - f - k, f, k }
' "$kt"/target/surefire-reports/TEST-*.xml 2>/dev/null || echo "kotlin: no test report (the build failed before the tests)"
[ "$status" = 0 ] || exit "$status"

echo "[kotlin] the example project (bindings/kotlin/example), against the installed io.sage:sage-queue"
mvnq -f "$kt/example/pom.xml" compile exec:java
