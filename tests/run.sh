#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine: installs what the tests
# need (Debian packages), then formatting, lints, Nix parse checks and
# `cargo test`. Idempotent; fast when everything is installed already.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedi-providers/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

bash tests/install-deps.sh

echo "== cargo fmt" >&2
cargo fmt --all -- --check

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== nix parse" >&2
# Under the project's own Nix configuration, as every Nix command the
# project runs (doc/architecture/008-nix-configuration.md).
for f in flake.nix $(find nix examples local -name '*.nix' 2>/dev/null); do
  env -u NIX_CONFIG -u NIX_REMOTE -u NIX_PATH NIX_CONF_DIR="$PWD/nix/conf" NIX_USER_CONF_FILES="" \
    nix-instantiate --parse "$f" >/dev/null
done

echo "== cargo test" >&2
cargo test --workspace --locked --no-fail-fast
