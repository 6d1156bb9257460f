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

# ---- Swift peer (inside the Swift root) ----
bash bindings/swift/build.sh
rootsh="bash bindings/swift/root.sh"
work=$($rootsh path)/work/sage-queue
mkdir -p "$work/interop" "$work/bin"
cp tests/interop/peer.swift "$work/interop/"
stamp=$(cat tests/interop/peer.swift "$work/lib/module.stamp" | sha256sum | cut -c1-16)
if [ "$(cat "$work/bin/interop.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$work/bin/sage-queue-interop-peer" ]; then
    echo "[interop] compiling the Swift peer" >&2
    rm -f "$work/bin/interop.stamp"
    # shellcheck disable=SC2016  # $ORIGIN is for the linker
    $rootsh run swiftc -O -I lib -L lib -lSageQueueFFI -lsage_queue \
        -Xcc -fmodule-map-file=gen/sage_queueFFI.modulemap \
        -Xlinker -rpath -Xlinker '$ORIGIN/../lib' \
        interop/peer.swift -o bin/sage-queue-interop-peer
    echo "$stamp" >"$work/bin/interop.stamp"
fi

# ---- Python ----
if ! (cd / && "$PY" -c "import sage_queue") 2>/dev/null; then
    echo "[interop] sage_queue is not installed: using the in-tree package (tests/dev_build.sh)" >&2
    bash tests/dev_build.sh >&2
    export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
fi

exec "$PY" tests/interop/run.py "$@"
