#!/usr/bin/env bash
# Build the Kotlin package: bindings/kotlin/build/sage-queue-<version>.jar
#
#   bash bindings/kotlin/build.sh
#
# Builds the release library, generates the Kotlin bindings with the crate's own
# uniffi-bindgen, compiles them with the hand-written conveniences (src/) and packs a jar
# with the native library inside (linux-x86-64/libsage_queue.so, where JNA looks for it),
# so no jna.library.path is needed. To use the jar, put it on the class path with JNA and
# the Kotlin standard library (the script prints the class path).
#
# Tools: kotlinc from the npm package kotlin-compiler (installed into .cache/kotlin on first
# use; set KOTLINC to use another), JNA from Debian's libjna-java (installed if missing),
# Java 17 or newer. Generated files go to bindings/kotlin/build/ (never committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=bindings/kotlin
out=$here/build
JNA_JAR=/usr/share/java/jna.jar
KOTLIN_NPM_VERSION=2.4

say() { printf '[kotlin] %s\n' "$*" >&2; }

# ---- tools ----

if [ -z "${KOTLINC:-}" ]; then
    KOTLINC=$root/.cache/kotlin/node_modules/kotlin-compiler/bin/kotlinc
    if [ ! -x "$KOTLINC" ]; then
        command -v npm >/dev/null || { say "npm not found: install Node.js (apt-get install npm)"; exit 1; }
        say "installing kotlinc (npm kotlin-compiler@$KOTLIN_NPM_VERSION) into .cache/kotlin"
        mkdir -p .cache/kotlin
        npm install --prefix .cache/kotlin --no-audit --no-fund --loglevel=error \
            "kotlin-compiler@$KOTLIN_NPM_VERSION" >&2
    fi
fi
KOTLIN_HOME=$(cd "$(dirname "$KOTLINC")/.." && pwd)
if [ ! -f "$JNA_JAR" ]; then
    say "installing JNA (Debian libjna-java)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q libjna-java >&2 || { apt-get update -q >&2 && apt-get install -y -q libjna-java >&2; }
fi
command -v java >/dev/null || { say "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"; exit 1; }

# ---- native library and generated sources ----

cargo build --release --lib --bin uniffi-bindgen
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
lib=target/release/libsage_queue.so
rm -rf "$out/gen"
mkdir -p "$out/gen"
# uniffi-bindgen runs `cargo metadata`, so it runs from the crate root.
target/release/uniffi-bindgen generate --library "$lib" --language kotlin \
    --out-dir "$out/gen" --no-format >/dev/null

# ---- compile (skipped when the sources are those of the last build) ----

mapfile -t sources < <(find "$out/gen" "$here/src" -name '*.kt' | sort)
# -nowarn: the generated code has unused-variable and similar warnings. The default JVM target
# (1.8) lets any Kotlin/JVM project use the jar, and inline the generated `use`.
flags=(-nowarn)
stamp=$( (cat "${sources[@]}"; echo "${flags[*]}"; "$KOTLINC" -version 2>&1) | sha256sum | cut -c1-16)
if [ "$(cat "$out/classes.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$out/classes" ]; then
    say "compiling ${#sources[@]} Kotlin files"
    rm -rf "$out/classes" "$out/classes.stamp"
    "$KOTLINC" "${flags[@]}" -cp "$JNA_JAR" -d "$out/classes" "${sources[@]}"
    echo "$stamp" > "$out/classes.stamp"
else
    say "sources unchanged: reusing the compiled classes"
fi

# ---- the jar: classes plus the native library for JNA's class-path lookup ----

rm -rf "$out/native" && mkdir -p "$out/native/linux-x86-64"
# Debug info (debug = 1 in the release profile) is no use inside a jar.
strip --strip-debug -o "$out/native/linux-x86-64/libsage_queue.so" "$lib" 2>/dev/null \
    || cp "$lib" "$out/native/linux-x86-64/libsage_queue.so"
jarfile=$out/sage-queue-$version.jar
rm -f "$out"/sage-queue-*.jar
jar --create --file "$jarfile" -C "$out/classes" . -C "$out/native" .
echo "$jarfile" > "$out/jar-path"
printf '%s\n' "$JNA_JAR:$KOTLIN_HOME/lib/kotlin-stdlib.jar" > "$out/runtime-classpath"
say "built $jarfile (class path to run with it: $(cat "$out/runtime-classpath"))"
