#!/usr/bin/env bash
# Installs the Debian packages the tests and the local example use, if
# missing. Idempotent: does nothing when everything is there.
set -euo pipefail

need=()
# ssh-keygen checks the keys the ssh-key provider generates.
command -v ssh-keygen >/dev/null || need+=(openssh-client)
# nix-instantiate parses the flake and the generated provider modules.
command -v nix-instantiate >/dev/null || need+=(nix-bin)
# ip: the local deployment's private network (bridge vmbr0, the guests'
# addresses); unshare: its network namespace and the test hosts' mount
# namespaces.
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
# knotd, keymgr and kdig: the Knot DNS server the dns-record tests update.
command -v knotd >/dev/null || need+=(knot)
command -v kdig >/dev/null || need+=(knot-dnsutils)
# named and tsig-keygen: BIND 9, the other server the dns-record tests update;
# nsupdate for the dns-record benchmark.
command -v named >/dev/null || need+=(bind9)
command -v tsig-keygen >/dev/null || need+=(bind9-utils)
command -v nsupdate >/dev/null || need+=(bind9-dnsutils)
# sshd: the test host the nixos-config tests deploy to (in a mount namespace
# of its own, with its own /nix; the Debian service unit is not used).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# sudo: the nixos-config tests deploy as a non-root user with passwordless
# sudo (its sudoers only inside the test host's namespace).
command -v sudo >/dev/null || need+=(sudo)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# Garage, the S3 server the garage-bucket tests run, from crates.io (not in
# Debian). A cold build takes about 25 minutes on 2 cores; only the LMDB
# engine is built, to shorten it.
if ! command -v garage >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
  echo "installing garage 2.5.0 from crates.io (a long build)" >&2
  CARGO_TARGET_DIR="${GARAGE_TARGET_DIR:-$HOME/.cache/fedi-providers/garage-target}" \
    cargo install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb
fi
