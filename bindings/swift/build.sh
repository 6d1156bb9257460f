#!/usr/bin/env bash
# Build the Swift package: the module SageQueueFFI as a library, in bindings/swift/build/
#
#   bash bindings/swift/build.sh
#
# Builds the release Rust library, generates the Swift bindings with the crate's own
# uniffi-bindgen (SageQueueFFI.swift, plus the C header and modulemap of the low-level module
# SageQueueFFIRaw), and compiles them with the hand-written conveniences (Sources/) into
# libSageQueueFFI.so + SageQueueFFI.swiftmodule, linked to libsage_queue.so.
#
# The compiler is Debian trixie's swiftlang in a root kept in .cache/swift (see root.sh; made
# on first use, ~3 min). The build happens in the root's /work/sage-queue; the results are
# copied to bindings/swift/build/lib (never committed):
#   lib/libSageQueueFFI.so lib/libsage_queue.so lib/SageQueueFFI.swiftmodule ...
#   gen/sage_queueFFI.h gen/sage_queueFFI.modulemap gen/SageQueueFFI.swift
# To use them: swiftc app.swift -I lib -L lib -lSageQueueFFI -lsage_queue \
#   -Xcc -fmodule-map-file=gen/sage_queueFFI.modulemap
set -euo pipefail
cd "$(dirname "$0")/../.."
here=bindings/swift
out=$here/build
rootsh="bash $here/root.sh"

say() { printf '[swift] %s\n' "$*" >&2; }

$rootsh ensure
root=$($rootsh path)

# ---- native library and generated sources ----

cargo build --release --lib --bin uniffi-bindgen
lib=target/release/libsage_queue.so
rm -rf "$out/gen"
mkdir -p "$out/gen" "$out/lib"
# uniffi-bindgen runs `cargo metadata`, so it runs from the crate root.
target/release/uniffi-bindgen generate --library "$lib" --language swift \
    --out-dir "$out/gen" --no-format >/dev/null

# ---- copy into the root and compile there (skipped when nothing changed) ----

work=$root/work/sage-queue
mkdir -p "$work/gen" "$work/src" "$work/lib"
rm -f "$work/gen"/* "$work/src"/*
cp "$out/gen"/* "$work/gen/"
cp "$here/Sources"/*.swift "$work/src/"
cp "$lib" "$work/lib/libsage_queue.so"
stamp=$(cat "$out/gen"/* "$here/Sources"/*.swift | sha256sum | cut -c1-16)
if [ "$(cat "$work/lib/module.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$work/lib/libSageQueueFFI.so" ]; then
    say "compiling the SageQueueFFI module"
    mapfile -t sources < <(cd "$here/Sources" && printf 'src/%s\n' *.swift)
    rm -f "$work/lib/module.stamp"
    # -Xcc -fmodule-map-file: the low-level C module (SageQueueFFIRaw) of the generated code.
    # rpath $ORIGIN: libSageQueueFFI.so finds libsage_queue.so beside it.
    # shellcheck disable=SC2016
    $rootsh run swiftc -emit-library -emit-module -parse-as-library -O \
        -module-name SageQueueFFI -Xcc -fmodule-map-file=gen/sage_queueFFI.modulemap -I gen \
        gen/SageQueueFFI.swift "${sources[@]}" \
        -L lib -lsage_queue -Xlinker -rpath -Xlinker '$ORIGIN' \
        -o lib/libSageQueueFFI.so -emit-module-path lib/SageQueueFFI.swiftmodule
    echo "$stamp" >"$work/lib/module.stamp"
else
    say "sources unchanged: reusing the compiled module"
fi
rm -rf "${out:?}/lib"
cp -r "$work/lib" "$out/lib"
rm -f "$out/lib/module.stamp"
say "built $out/lib/libSageQueueFFI.so (module SageQueueFFI; headers and modulemap in $out/gen)"
