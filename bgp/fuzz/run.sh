#!/usr/bin/env bash
# Build every fuzz target of the bgp codec and run each for SECONDS; one line per target.
# Exits non-zero when a target crashes (the input is left in artifacts/TARGET/) or the
# build fails. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`, scripts/setup.sh
# does it) and a Rust toolchain that is present — none is downloaded:
#   - RUSTUP_TOOLCHAIN, when set, is the one used;
#   - else the nightly toolchain when one is installed;
#   - else the default (stable) one with RUSTC_BOOTSTRAP=1, which lets it take the
#     unstable flags cargo-fuzz passes (-Zsanitizer=address and the coverage options).
# A toolchain without AddressSanitizer's runtime builds with --sanitizer none (said so);
# FUZZ_SANITIZER overrides the choice.
#
#   bgp/fuzz/run.sh SECONDS
set -euo pipefail

secs=${1:?usage: run.sh SECONDS}
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo-fuzz is required (cargo install cargo-fuzz --locked)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "run.sh: cargo is required" >&2; exit 1; }

if [[ -z ${RUSTUP_TOOLCHAIN:-} ]] && command -v rustup >/dev/null &&
    rustup toolchain list | grep -q '^nightly'; then
    export RUSTUP_TOOLCHAIN=nightly
fi
version=$(rustc -vV 2>&1) || { echo "run.sh: no usable Rust toolchain (${RUSTUP_TOOLCHAIN:-default}): $version" >&2; exit 1; }
release=$(sed -n 's/^release: //p' <<<"$version")
case $release in
    *-nightly | *-dev) how="nightly rustc $release" ;;
    *)
        export RUSTC_BOOTSTRAP=1
        how="rustc $release with RUSTC_BOOTSTRAP=1"
        ;;
esac

# AddressSanitizer needs its runtime in the toolchain (rust-std ships it for this host);
# without it the targets are built with no sanitizer, and the run says so.
host=$(sed -n 's/^host: //p' <<<"$version")
if [[ -n ${FUZZ_SANITIZER:-} ]]; then
    sanitizer=$FUZZ_SANITIZER
elif compgen -G "$(rustc --print sysroot)/lib/rustlib/$host/lib/librustc-*_rt.asan.a" >/dev/null; then
    sanitizer=address
else
    sanitizer=none
    echo "run.sh: $how has no AddressSanitizer runtime for $host: fuzzing without a sanitizer" >&2
fi

targets=(message open update notification route_refresh round_trip bfd)
log=$(mktemp)
if ! cargo fuzz build -O --sanitizer "$sanitizer" >"$log" 2>&1; then
    cat "$log" >&2
    echo "run.sh: build failed with $how (sanitizer $sanitizer)" >&2
    exit 1
fi
rm -f "$log"
echo "fuzzing with $how, sanitizer $sanitizer"
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # Seed with the regression inputs and the captured messages.
    [[ -d "regressions/$t" ]] && cp -n regressions/"$t"/* "corpus/$t/" 2>/dev/null || true
    log=$(mktemp)
    if cargo fuzz run -O --sanitizer "$sanitizer" "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192 \
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
