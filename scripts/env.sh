# Sourced by the scripts: one cargo target dir outside the checkout, shared by
# every clone on this machine so a fresh clone does not rebuild from scratch.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lanspread/target}"
mkdir -p "$CARGO_TARGET_DIR"
