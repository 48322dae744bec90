#!/usr/bin/env bash
# End-to-end test: the real desktop app under Xvfb, driven over WebDriver
# (tauri-driver + WebKitWebDriver), downloads a game from a real headless
# `lanspread-peer serve` on 127.0.0.1. Screenshots: out/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

npm run --silent app:build
cargo build --locked -q -p lanspread-peer
app="$CARGO_TARGET_DIR/debug/lanspread"
peer="$CARGO_TARGET_DIR/debug/lanspread-peer"

work="$(mktemp -d)"
pids=()
cleanup() {
  # Each background job leads its own process group (setsid): end the group.
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A small game with metadata, several files and an empty folder.
game="$work/host/games/e2e-arena"
mkdir -p "$game/data/maps" "$game/saves"
head -c 6000000 /dev/urandom > "$game/data/arena.pak"
for i in 1 2 3; do head -c $((i * 1000)) /dev/urandom > "$game/data/maps/map$i.bsp"; done
printf 'title = "E2E Arena"\nversion = "1.0"\ngenre = "Test"\n' > "$game/lanspread.toml"

port=$((20000 + RANDOM % 20000))
setsid "$peer" serve -q --no-mdns --listen "127.0.0.1:$port" --games "$work/host/games" \
  --data "$work/host/data" --name "e2e host" &
pids+=($!)

mkdir -p out/e2e "$work/app/games"
export LANSPREAD_GAMES_DIR="$work/app/games" LANSPREAD_DATA_DIR="$work/app/data"
export LANSPREAD_PEERS="127.0.0.1:$port" LANSPREAD_MDNS=0 LANSPREAD_LISTEN="127.0.0.1:0"
setsid xvfb-run --auto-servernum --server-args="-screen 0 1280x800x24" tauri-driver --port 4444 \
  > out/e2e/tauri-driver.log 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  (exec 3<> /dev/tcp/127.0.0.1/4444) 2> /dev/null && break
  sleep 0.2
done

LANSPREAD_APP="$app" E2E_SOURCE_GAME="$game" E2E_TARGET_GAME="$work/app/games/e2e-arena" \
  node e2e/download.mjs
