#!/usr/bin/env bash
# Three languages on one queue: builds the Kotlin and Swift packages and the peers, then runs
# tests/interop/run.py (Python, Kotlin and Swift processes on the same queues).
#   bash tests/interop/run.sh [SCENARIO-SUBSTRING...]
# Python: the installed sage_queue package if there is one (./run.sh test installs it), else
# the in-tree one built by tests/dev_build.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
# ---- Kotlin peer (Maven: io.sage:sage-queue into ~/.m2, then the peer against it) ----
# (-DskipTests: tests/kotlin/run.sh runs the JUnit tests.) The peer's class path is left in
# bindings/kotlin/build/ for run.py.
mvn -B -q -f bindings/kotlin/pom.xml install -DskipTests
mvn -B -q -f bindings/kotlin/interop-peer/pom.xml process-classes

# ---- Swift peer (the Swift package's executable, run inside the Swift root) ----
bash bindings/swift/build.sh
# run.py starts it as bin/sage-queue-interop-peer in the root's /work/sage-queue; the root sees
# this repository at its own path, so the link points at the package's build.
swift_bin=$(bash bindings/swift/root.sh path)/work/sage-queue/bin
mkdir -p "$swift_bin"
ln -sfn "$(pwd -P)/bindings/swift/.build/release/sage-queue-interop-peer" "$swift_bin/sage-queue-interop-peer"

# ---- Python ----
if ! (cd / && "$PY" -c "import sage_queue") 2>/dev/null; then
    echo "[interop] sage_queue is not installed: using the in-tree package (tests/dev_build.sh)" >&2
    bash tests/dev_build.sh >&2
    export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
fi

exec "$PY" tests/interop/run.py "$@"
