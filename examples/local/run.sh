#!/usr/bin/env bash
# The suite's main job on a local default: apply the example deployment the
# way NixOps4 does (one provider process per resource operation, outputs of
# one resource feeding the inputs of the next), with `fedi-resource-runner`.
#
# Today the deployment holds what the providers built so far: the
# operator's deployer key (ssh-key). Run it again and the key is kept;
# ROTATE=1 replaces it; DESTROY=1 deletes what it made.
#
# State (the recorded inputs and outputs, as NixOps4 would keep them) and the
# private key live under $FEDI_LOCAL_DIR (default ~/.local/state/fedi-local).
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedi-providers/target}"
dir="${FEDI_LOCAL_DIR:-$HOME/.local/state/fedi-local}"
mkdir -p "$dir/state"

bash tests/install-deps.sh
cargo build --locked -q -p fedi-resource-runner -p fedi-ssh-key
runner="$CARGO_TARGET_DIR/debug/fedi-resource-runner"
ssh_key="$CARGO_TARGET_DIR/debug/fedi-ssh-key"

generation=1
if [ -f "$dir/state/deployer.inputs.json" ]; then
  generation=$(jq '.rotationTrigger' "$dir/state/deployer.inputs.json")
  [ "${ROTATE:-0}" = 1 ] && generation=$((generation + 1))
fi
inputs=$(jq -cn --arg path "$dir/keys/deployer" --argjson generation "$generation" \
  '{privateKeyPath: $path, comment: "deployer@fedi.local", rotationTrigger: $generation}')

if [ "${DESTROY:-0}" = 1 ]; then
  if [ -f "$dir/state/deployer.outputs.json" ]; then
    "$runner" delete --provider-exe "$ssh_key" --type keypair \
      --inputs-json "$(cat "$dir/state/deployer.inputs.json")" \
      --outputs-json "$(cat "$dir/state/deployer.outputs.json")" >/dev/null
    rm -f "$dir/state/deployer.inputs.json" "$dir/state/deployer.outputs.json" "$dir/authorized_keys"
  fi
  echo "destroyed: nothing of the local deployment is left under $dir" >&2
  exit 0
fi

if [ -f "$dir/state/deployer.outputs.json" ]; then
  outputs=$("$runner" update --provider-exe "$ssh_key" --type keypair \
    --inputs-json "$inputs" \
    --previous-inputs-json "$(cat "$dir/state/deployer.inputs.json")" \
    --previous-outputs-json "$(cat "$dir/state/deployer.outputs.json")")
else
  outputs=$("$runner" create --provider-exe "$ssh_key" --type keypair --stateful --inputs-json "$inputs")
fi
printf '%s\n' "$inputs" > "$dir/state/deployer.inputs.json"
printf '%s\n' "$outputs" > "$dir/state/deployer.outputs.json"

public_key=$(jq -r .publicKey <<<"$outputs")
fingerprint=$(jq -r .fingerprint <<<"$outputs")
# The next resource consumes the key's output, as a VM's cloud-init would.
printf '%s\n' "$public_key" > "$dir/authorized_keys"

echo "deployer key:    $fingerprint"
echo "public key:      $public_key"
echo "private key:     $dir/keys/deployer (mode $(stat -c %a "$dir/keys/deployer"))"
echo "authorized_keys: $dir/authorized_keys"
echo "OpenSSH agrees:  $(ssh-keygen -l -f "$dir/keys/deployer")"
