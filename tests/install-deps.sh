#!/usr/bin/env bash
# Installs the Debian packages the tests and the local example use, if
# missing. Idempotent: does nothing when everything is there.
set -euo pipefail

need=()
# ssh-keygen checks the keys the ssh-key provider generates.
command -v ssh-keygen >/dev/null || need+=(openssh-client)
# nix-instantiate parses the flake and the generated provider modules.
command -v nix-instantiate >/dev/null || need+=(nix-bin)
# jq reads provider outputs in the local example.
command -v jq >/dev/null || need+=(jq)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${need[@]}"
fi
