#!/usr/bin/env bash
# Every test of the project: set-up, formatting, lints, the workspace tests,
# the UI tests. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "front end: type check and build (the app embeds ui/dist)"
npm run --silent ui:build

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "workspace tests (nextest)"
cargo nextest run --workspace --locked --no-fail-fast

step "fuzz the wire decoder and manifest and path checks (20 s per target)"
./scripts/fuzz.sh

step "Windows: clippy, both binaries built, tests under Wine"
./scripts/windows.sh

step "UI tests (vitest)"
npm run --silent ui:test

step "end to end: the desktop app downloads from a headless peer and gets its lineup (WebDriver, Xvfb)"
./scripts/e2e.sh
