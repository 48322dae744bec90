#!/usr/bin/env bash
# Windows from this Debian machine: clippy for x86_64-pc-windows-gnu with
# warnings denied, debug builds of the headless peer and the desktop app for
# it, and the tests of `proto` and `peer` run as Windows binaries under Wine.
# Called by scripts/test.sh (after the front end is built: the app embeds
# ui/dist). Installs what it needs, as root, once. Exits non-zero on the
# first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# A target dir of its own: the host parts of this build (build scripts,
# proc macros) come from another compiler, rustc-web, and would otherwise
# replace the main build's and make it rebuild.
export CARGO_TARGET_DIR="${LANSPREAD_WINDOWS_TARGET_DIR:-$HOME/.cache/lanspread/target-windows}"
mkdir -p "$CARGO_TARGET_DIR"

TARGET=x86_64-pc-windows-gnu

# Debian's Rust (rustc-web) ships the library source, so std is built for
# the target (-Zbuild-std) without downloading a prebuilt one; its clippy
# matches that compiler. mingw links; Wine runs the tests.
APT_PACKAGES=(gcc-mingw-w64-x86-64 rustc-web rust-web-src rust-web-clippy wine64)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "windows: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
CROSS=(--target "$TARGET" -Zbuild-std=std,panic_abort --locked)
OUT="$CARGO_TARGET_DIR/$TARGET/debug"

phase() { printf -- '--- %s\n' "$*"; }
took() { printf -- '    (%d s)\n' "$((SECONDS - $1))"; }

start=$SECONDS
phase "clippy for $TARGET (warnings denied)"
/usr/bin/cargo-clippy clippy --workspace --all-targets "${CROSS[@]}" -- -D warnings
took "$start"

start=$SECONDS
phase "build lanspread-peer.exe and lanspread.exe (debug)"
cargo build "${CROSS[@]}" -p lanspread-peer -p lanspread --bins
for exe in lanspread-peer.exe lanspread.exe; do
  printf '    %s  %s bytes\n' "$OUT/$exe" "$(stat -c %s "$OUT/$exe")"
done
took "$start"

start=$SECONDS
phase "build the tests of proto and peer for Windows"
artifacts=$(mktemp)
trap 'rm -f "$artifacts"' EXIT
cargo test "${CROSS[@]}" -p lanspread-proto -p lanspread-peer --lib --tests --no-run \
  --message-format=json-render-diagnostics > "$artifacts"
# "crate kind target=path" for each test binary, e.g. "peer test it=/…/it-….exe".
tests=()
while IFS= read -r exe; do tests+=("$exe"); done < <(python3 -c '
import json, os, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        crate = os.path.basename(os.path.dirname(m["manifest_path"]))
        print("%s %s %s=%s" % (crate, m["target"]["kind"][0], m["target"]["name"], m["executable"]))
' "$artifacts")
((${#tests[@]})) || { echo "windows: no test binaries built" >&2; exit 1; }
# Wine 8 has no bcryptprimitives.dll (std's ProcessPrng): a shim beside the tests.
SHIM="$OUT/deps/bcryptprimitives.dll"
if [[ ! -f $SHIM || scripts/wine/bcryptprimitives.c -nt $SHIM || scripts/wine/bcryptprimitives.def -nt $SHIM ]]; then
  x86_64-w64-mingw32-gcc -shared -O2 -o "$SHIM" \
    scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -ladvapi32
fi
took "$start"

start=$SECONDS
phase "run them under Wine"
# Debian's wine64 package installs the loader here, not on PATH.
WINE=/usr/lib/wine/wine64
export WINEPREFIX="$CARGO_TARGET_DIR/wine-prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
if [[ ! -d $WINEPREFIX/drive_c ]]; then
  "$WINE" wineboot --init > /dev/null 2>&1 || true
fi
cp -f "$SHIM" "$OUT/"

# Can this Wine open a QUIC socket? Ask the real peer to listen.
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir" "$artifacts"' EXIT
mkdir -p "$probe_dir/games"
timeout 60 "$WINE" "$OUT/lanspread-peer.exe" serve --games "$probe_dir/games" \
  --data "$probe_dir/data" --listen 127.0.0.1:0 --no-mdns -q > "$probe_dir/out" 2>&1 &
probe=$!
for _ in $(seq 1 60); do
  grep -q "serving on" "$probe_dir/out" && break
  kill -0 "$probe" 2> /dev/null || break
  sleep 1
done
if grep -q "serving on" "$probe_dir/out"; then
  quic_reason=""
  kill -INT "$probe" 2> /dev/null || true
  echo "    QUIC sockets open under $("$WINE" --version): every test runs"
else
  quic_reason=$(grep -m1 "cannot listen" "$probe_dir/out" || tail -n1 "$probe_dir/out")
  echo "    QUIC sockets do not open under $("$WINE" --version):"
  echo "    $quic_reason"
  echo "    so tests that fail only for want of one are counted as skipped, each named"
fi
wait "$probe" 2> /dev/null || true

rc=0
python3 scripts/wine/run-tests.py "$WINE" "$quic_reason" "${tests[@]}" || rc=$?
took "$start"
exit "$rc"
