#!/usr/bin/env bash
# Build every fuzz target of the bgp codec and run each for SECONDS; one line per target.
# Exits non-zero when a target crashes (the input is left in artifacts/TARGET/) or the
# build fails. Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   bgp/fuzz/run.sh SECONDS
set -euo pipefail

secs=${1:?usage: run.sh SECONDS}
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo-fuzz is required (cargo install cargo-fuzz)" >&2; exit 1; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "run.sh: the nightly toolchain is required" >&2; exit 1; }

targets=(message open update notification route_refresh round_trip)
log=$(mktemp)
cargo +nightly fuzz build -O >"$log" 2>&1 || {
    cat "$log" >&2
    echo "run.sh: build failed" >&2
    exit 1
}
rm -f "$log"
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # Seed with the regression inputs and the captured messages.
    [[ -d "regressions/$t" ]] && cp -n regressions/"$t"/* "corpus/$t/" 2>/dev/null || true
    log=$(mktemp)
    if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
        printf '%-14s ok     %ss  %s runs  coverage %s\n' "$t" "$secs" "$runs" "$cov"
    else
        printf '%-14s CRASH  see %s and artifacts/%s/\n' "$t" "$log" "$t"
        tail -30 "$log" >&2
        status=1
        continue
    fi
    rm -f "$log"
done
exit $status
