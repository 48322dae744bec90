#!/usr/bin/env bash
# Fuzzes the wire decoder and manifest and path validation (proto/fuzz) for
# a fixed time per target and fails on any crash. Seeds come from real
# encodings (proto/examples/fuzz_seeds.rs); corpora grow in the fuzz target
# dir, so a later run starts where the last one stopped.
#
#   FUZZ_SECONDS                 seconds per target (default 20)
#   LANSPREAD_FUZZ_TARGET_DIR    build dir and corpora, outside the clone
#                                (default ~/.cache/lanspread/target-fuzz)
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. A crash leaves its input in proto/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
FUZZ_DIR="${LANSPREAD_FUZZ_TARGET_DIR:-$HOME/.cache/lanspread/target-fuzz}"
TARGETS=(decode decode_stream manifest path)

if ! cargo fuzz --version > /dev/null 2>&1; then
  echo "fuzz: cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

mkdir -p "$FUZZ_DIR/logs"
cargo run --quiet --locked -p lanspread-proto --example fuzz_seeds -- "$FUZZ_DIR/corpus"

export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir proto/fuzz --target-dir "$FUZZ_DIR" > "$FUZZ_DIR/logs/build.log" 2>&1 \
  || { tail -n 40 "$FUZZ_DIR/logs/build.log"; exit 1; }
for target in "${TARGETS[@]}"; do
  log="$FUZZ_DIR/logs/$target.log"
  if ! cargo fuzz run --fuzz-dir proto/fuzz --target-dir "$FUZZ_DIR" "$target" \
    "$FUZZ_DIR/corpus/$target" -- -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 \
    -timeout=10 > "$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target failed; the input is in proto/fuzz/artifacts/$target/"
    exit 1
  fi
  echo "fuzz: $target: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -n 1)"
done
