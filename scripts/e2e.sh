#!/usr/bin/env bash
# End-to-end test: the real desktop app under Xvfb, driven over WebDriver
# (tauri-driver + WebKitWebDriver), downloads a game from a real headless
# `lanspread-peer serve` on 127.0.0.1, then gets the lineup that host
# publishes as organizer. Screenshots: out/e2e/.
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

# Games with covers; the one downloaded has several files, an empty folder
# and a program for Play that leaves a mark outside the game folder.
games="$work/host/games"
make_game() { # folder, title, cover hue, size in bytes, extra metadata
  mkdir -p "$games/$1/data"
  head -c "$4" /dev/urandom > "$games/$1/data/$1.pak"
  node e2e/cover.mjs "$games/$1/cover.png" "$3"
  printf 'title = "%s"\nversion = "1.0"\n%s' "$2" "$5" > "$games/$1/lanspread.toml"
}
game="$games/e2e-arena"
played="$work/played"
make_game e2e-arena "E2E Arena" 215 12000000 "$(printf '%s\n' \
  'genre = "Test"' 'description = "A test arena."' 'min_players = 2' 'max_players = 8' \
  'executable = "run.sh"' "args = [\"$played\"]")"
mkdir -p "$game/data/maps" "$game/saves"
for i in 1 2 3; do head -c $((i * 1000)) /dev/urandom > "$game/data/maps/map$i.bsp"; done
printf '#!/bin/sh\necho played > "$1"\n' > "$game/run.sh"
chmod +x "$game/run.sh"
# Big enough that the lineup's downloads are seen in progress.
make_game neon-racer "Neon Racer" 300 6000000 'genre = "Racing"'
make_game castle-siege "Castle Siege" 25 3000000 'genre = "Strategy"'

port=$((20000 + RANDOM % 20000))
# Tonight's lineup, published by the host as organizer.
"$peer" lineup set e2e-arena@20:00 neon-racer@21:30 castle-siege --data "$work/host/data"
# The upload limit makes the download last a few seconds: long enough to
# see it in progress.
setsid "$peer" serve -q --no-mdns --listen "127.0.0.1:$port" --games "$games" \
  --data "$work/host/data" --name "e2e host" --upload-limit 2500000 --organizer &
pids+=($!)
# A guest with none of the games: the ready board has a peer that is not ready.
mkdir -p "$work/guest/games"
setsid "$peer" serve -q --no-mdns --listen "127.0.0.1:$((port + 1))" --games "$work/guest/games" \
  --data "$work/guest/data" --name "e2e guest" --peer "127.0.0.1:$port" &
pids+=($!)

rm -rf out/e2e
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
  E2E_PLAYED="$played" node e2e/download.mjs
