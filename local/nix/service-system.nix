# The local deployment's stand-in for an application's NixOS system, built
# with plain `builtins.derivation` and /bin/sh (this machine has no nixpkgs,
# so the real systems of nix/nixos/ cannot be built here).
#
# It carries the configurator's `service` as `service.json`, and its
# `bin/switch-to-configuration` does on the guest what the real system's
# activation would need and show:
#   - refuses to activate (exit 4, like a failing unit) when a key the
#     service needs is missing from /run/keys (the S3 secret, the admin
#     password), so a deployment without its keys fails;
#   - installs root's authorized keys from `service.ssh.authorizedKeys`
#     (NixOS manages them: the deployer must still get in afterwards);
#   - publishes the service configuration at /root/fediversity/service.json
#     and points /run/current-system at itself;
#   - records each activation in /root/activations.
{ application, serviceJson }:
let
  service = builtins.fromJSON serviceJson;
  authorizedKeys = builtins.concatStringsSep "\n" service.ssh.authorizedKeys + "\n";
  switch = ''
    #!/bin/sh
    set -e
    goal="$1"
    out=@out@
    for key in s3-secret-key admin-password; do
      if [ ! -s /run/keys/$key ]; then
        echo "error: ${application}.service: /run/keys/$key is missing or empty" >&2
        exit 4
      fi
    done
    case "$goal" in
      switch|test)
        mkdir -p /root/fediversity /root/.ssh
        cp "$out/authorized_keys" /root/.ssh/authorized_keys.new
        chmod 600 /root/.ssh/authorized_keys.new
        mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
        cp "$out/service.json" /root/fediversity/service.json
        ln -sfn "$out" /run/current-system ;;
      dry-activate) echo "would activate $out" ;;
    esac
    echo "$goal $out" >> /root/activations
  '';
in
builtins.derivation {
  name = "nixos-system-${application}-${builtins.replaceStrings [ "." ] [ "-" ] service.domain}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  inherit serviceJson switch authorizedKeys;
  args = [
    "-c"
    ''
      mkdir -p $out/bin
      printf '%s' "$serviceJson" > $out/service.json
      printf '%s' "$authorizedKeys" > $out/authorized_keys
      printf '%s' "$switch" | sed -e "s|@out@|$out|g" > $out/bin/switch-to-configuration
      chmod +x $out/bin/switch-to-configuration
    ''
  ];
}
