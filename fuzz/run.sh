#!/usr/bin/env bash
# Fuzz both targets: fuzz/run.sh [seconds per target] (default 30, a short CI run).
# FUZZ_SEED=N for a repeatable run.
# Needs cargo-fuzz (cargo install cargo-fuzz). cargo fuzz uses nightly-only flags (-Z
# sanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. SANITIZER=none to build
# without AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
failed=0
export RUSTC_BOOTSTRAP=1
san=(--sanitizer "${SANITIZER:-address}")
for t in segment_open batch_table; do
    mkdir -p "corpus/$t" artifacts
    echo "==> fuzz $t for ${secs}s"
    # FUZZ_SEED fixes libFuzzer's seed (the CI run is then the same every time).
    cargo fuzz run "${san[@]}" -O "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=10 \
        ${FUZZ_SEED:+-seed=$FUZZ_SEED} \
        -rss_limit_mb=4096 -max_len=200000 -print_final_stats=1 2>&1 | tee "artifacts/$t.log" \
        | grep -E "Done|stat::number_of_executed_units|ERROR|panicked|SUMMARY" || true
    if grep -qE "ERROR: libFuzzer|panicked|SUMMARY: AddressSanitizer" "artifacts/$t.log"; then
        echo "fuzz $t found a failure (see artifacts/$t)"; failed=1
    fi
done
exit "$failed"
