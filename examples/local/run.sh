#!/usr/bin/env bash
# The suite's main job on a local default: the example operator deployment
# (examples/fediversity/panel.json: Mastodon, Pixelfed, PeerTube for
# alice.fedi.test) applied the way NixOps4 does, against real local
# backends that this script installs and `fedi-local` starts: Garage, Knot
# DNS, the Proxmox VE API test server whose VMs boot as SSH/Nix hosts.
# Then the changed panel (examples/local/panel-changed.json: PeerTube off,
# Mastodon one size up) is applied, and everything is destroyed; after each
# phase the backends are checked against the state.
#
# Needs root (apt-get; a private network namespace and mount namespaces for
# the guests). Arguments go to fedi-local, e.g. `--keep` (stop before the
# destroy), `--panel FILE`, `--state-dir DIR`, `--report FILE`; `--help`.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedi-providers/target}"

bash tests/install-deps.sh
echo "building the providers and fedi-local ..." >&2
cargo build --locked -q --bins \
  -p fedi-local -p fedi-ssh-key -p fedi-garage-bucket -p fedi-proxmox-vm \
  -p fedi-dns-record -p fedi-nixos-config
exec "$CARGO_TARGET_DIR/debug/fedi-local" "$@"
