#!/usr/bin/env bash
# Three languages on one queue: builds the Kotlin and Swift packages and the peers, then runs
# tests/interop/run.py (Python, Kotlin and Swift processes on the same queues).
#   bash tests/interop/run.sh [SCENARIO-SUBSTRING...]
# Python: the installed sage_queue package if there is one (./run.sh test installs it), else
# the in-tree one built by tests/dev_build.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
KOTLINC=${KOTLINC:-$PWD/.cache/kotlin/node_modules/kotlin-compiler/bin/kotlinc}

# ---- Kotlin peer ----
bash bindings/kotlin/build.sh
kt=bindings/kotlin/build
jar=$(cat "$kt/jar-path")
cp=$(cat "$kt/runtime-classpath")
stamp=$(cat tests/interop/Peer.kt "$kt/classes.stamp" | sha256sum | cut -c1-16)
if [ "$(cat "$kt/interop.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$kt/interop" ]; then
    echo "[interop] compiling the Kotlin peer" >&2
    rm -rf "$kt/interop" "$kt/interop.stamp"
    "$KOTLINC" -nowarn -cp "$jar:$cp" -d "$kt/interop" tests/interop/Peer.kt
    echo "$stamp" >"$kt/interop.stamp"
fi

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
