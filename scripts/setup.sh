#!/usr/bin/env bash
# Installs everything lanspread needs to build, run and test on Debian 12, as
# root. Idempotent: each step runs only when its result is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages Tauri needs on Linux, plus Xvfb for headless runs and
# WebKitWebDriver for the end-to-end tests.
APT_PACKAGES=(
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev
  libxdo-dev libssl-dev build-essential pkg-config xvfb xauth webkit2gtk-driver
  iproute2 b3sum
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Front-end packages, exactly as locked.
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi

# The WebDriver server for the end-to-end test of the desktop app.
if ! command -v tauri-driver > /dev/null; then
  echo "setup: cargo install tauri-driver"
  cargo install tauri-driver --version '^2' --locked --quiet
fi
