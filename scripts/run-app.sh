#!/usr/bin/env bash
# Builds the desktop app with its front end embedded and starts it. Without a
# display it starts it under Xvfb (the window is then invisible; use the
# headless `lanspread-peer` for a server instead).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh

npm run --silent app:build
app="$CARGO_TARGET_DIR/debug/lanspread"
if [[ -n "${DISPLAY:-}" || -n "${WAYLAND_DISPLAY:-}" ]]; then
  exec "$app" "$@"
fi
echo "run-app: no display found; starting lanspread under Xvfb (DISPLAY is virtual)." >&2
echo "run-app: for a machine without a screen, run the headless peer: see README." >&2
exec xvfb-run --auto-servernum --server-args="-screen 0 1280x800x24" "$app" "$@"
