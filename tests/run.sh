#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine: installs what the tests
# need (Debian packages), then formatting, lints, Nix parse checks and
# `cargo test`. Idempotent; fast when everything is installed already.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedi-providers/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Debian packages: ssh-keygen checks the keys we generate; nix-instantiate
# parses the flake and the generated provider modules.
need=()
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v nix-instantiate >/dev/null || need+=(nix-bin)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${need[@]}"
fi

echo "== cargo fmt" >&2
cargo fmt --all -- --check

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== nix parse" >&2
for f in flake.nix $(find nix examples -name '*.nix' 2>/dev/null); do
  nix-instantiate --parse "$f" >/dev/null
done

echo "== cargo test" >&2
cargo test --workspace --locked
