# Generated from `fedi-nixos-config --schema` by `fedi-resource-runner generate`.
# Do not edit: change the provider's Rust types and regenerate.
{ package }:
{ lib, resourceProviderSystem, ... }:
let
  inherit (lib) mkOption types;
in
{
  name = "nixos-config";
  description = ''
    Deploys a NixOS system closure onto an existing host over SSH: copies it with `nix copy`, activates it detached from the connection, rolls back when activation fails or a fresh SSH connection cannot confirm it (magic rollback), and uploads secret files outside the Nix store.
  '';
  sourceBaseUrl = "https://example.invalid/fediversity/nixops4-providers";
  sourceName = "fediversity-providers";
  executable = "${package resourceProviderSystem}/bin/fedi-nixos-config";
  resourceTypes = {
    deployment = {
      description = ''
        A NixOS system deployed onto an existing host over SSH (pinned host key, one shared connection): the closure copied with `nix copy`, activated detached from the connection, rolled back by the host itself when activation fails or a fresh connection cannot confirm it (magic rollback), secret files uploaded outside the store. Deploying what the host already runs copies and switches nothing. Deleting leaves the host as it is and forgets it.

        Supports, beyond NixOps4 v0: delete (`xDeleteResourceRequest`), read (`xReadResourceRequest`).
      '';
      requireState = false;
      inputs = {
        options = {
          activationTimeout = mkOption {
            type = types.ints.unsigned;
            default = 600;
            description = ''
              Seconds `switch-to-configuration` may take before the deployment
              gives up waiting (the switch itself continues on the host).
            '';
          };
          checkSignatures = mkOption {
            type = types.bool;
            default = true;
            description = ''
              Require signatures the target trusts on copied paths (Nix's default).
              Turn off only when the deploying user is trusted by the target's Nix
              anyway, or on test hosts.
            '';
          };
          confirmTimeout = mkOption {
            type = types.ints.unsigned;
            default = 30;
            description = ''
              Seconds the host waits for the confirmation of magic rollback.
            '';
          };
          connectTimeout = mkOption {
            type = types.ints.unsigned;
            default = 10;
            description = ''
              Seconds to wait for the host to answer a connection (TCP and SSH
              banner) before giving up.
            '';
          };
          copyTimeout = mkOption {
            type = types.ints.unsigned;
            default = 3600;
            description = ''
              Seconds the whole copy of the closure may take.
            '';
          };
          goal = mkOption {
            type = types.enum [ "switch" "boot" "test" "dry-activate" ];
            default = "switch";
            description = ''
              What to do with the system: `switch` (activate now and make it the
              boot default), `boot` (boot default only), `test` (activate now, not
              for boot), `dry-activate` (show what would change; change nothing).
            '';
          };
          host = mkOption {
            type = types.str;
            description = ''
              Host name or address of the target.
            '';
          };
          hostPublicKey = mkOption {
            type = types.str;
            description = ''
              The host's public SSH key, `ssh-ed25519 AAAA...` (a comment is
              allowed). The connection is refused when the host offers another
              key: no trust on first use, no prompts.
            '';
          };
          keys = mkOption {
            type = types.nullOr (types.listOf (types.submodule {
              options = {
                destDir = mkOption {
                  type = types.str;
                  default = "/run/keys";
                  description = ''
                    Directory on the host; created (mode 0755) when missing.
                  '';
                };
                file = mkOption {
                  type = types.str;
                  description = ''
                    File on the deploying machine holding the content (read when the
                    deployment runs; never logged, never an input value).
                  '';
                };
                group = mkOption {
                  type = types.str;
                  default = "root";
                  description = ''
                    Group of the file on the host.
                  '';
                };
                name = mkOption {
                  type = types.str;
                  description = ''
                    File name on the host (letters, digits, `.`, `_`, `-`).
                  '';
                };
                owner = mkOption {
                  type = types.str;
                  default = "root";
                  description = ''
                    Owner of the file on the host.
                  '';
                };
                permissions = mkOption {
                  type = types.str;
                  default = "0600";
                  description = ''
                    Mode of the file on the host, octal.
                  '';
                };
                uploadAt = mkOption {
                  type = types.enum [ "pre-activation" "post-activation" ];
                  default = "pre-activation";
                  description = ''
                    Upload before activation (so services find it when they start) or
                    after (when its owner is a user the new system creates).
                  '';
                };
              };
            }));
            default = null;
            description = ''
              Secret files to put on the host, outside the Nix store.
            '';
          };
          magicRollback = mkOption {
            type = types.nullOr (types.bool);
            default = null;
            description = ''
              After activating, a brand-new SSH connection must confirm within
              `confirmTimeout` seconds; otherwise the host rolls back to the
              previous generation by itself. Default: on for `switch` and `test`,
              off (and not allowed) for `boot` and `dry-activate`.
            '';
          };
          nixExecutable = mkOption {
            type = types.str;
            default = "nix";
            description = ''
              The `nix` executable (for `nix copy`).
            '';
          };
          port = mkOption {
            type = types.ints.unsigned;
            default = 22;
            description = ''
              SSH port of the target.
            '';
          };
          sshExecutable = mkOption {
            type = types.str;
            default = "ssh";
            description = ''
              The `ssh` executable (OpenSSH).
            '';
          };
          sshKeyFile = mkOption {
            type = types.nullOr (types.str);
            default = null;
            description = ''
              Private key file to log in with (on the deploying machine). Unset:
              OpenSSH's defaults and agent.
            '';
          };
          substituteOnDestination = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Let the target fetch store paths from its own substituters instead of
              receiving them from the deploying machine.
            '';
          };
          sudo = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Run the remote steps through `sudo -n` (passwordless sudo) because
              `user` is not root; the closure is copied through `sudo -n
              nix-daemon`.
            '';
          };
          system = mkOption {
            type = types.str;
            description = ''
              The system to deploy: the store path of a built NixOS system
              (`nixosConfigurations.<name>.config.system.build.toplevel`), present
              in the deploying machine's store.
            '';
          };
          user = mkOption {
            type = types.str;
            default = "root";
            description = ''
              User to log in as: `root`, or a user allowed passwordless `sudo`
              (then set `sudo = true`).
            '';
          };
        };
      };
      outputs = {
        options = {
          changed = mkOption {
            type = types.bool;
            description = ''
              Whether anything changed on the host (system activated, profile set,
              key written).
            '';
          };
          generation = mkOption {
            type = types.nullOr (types.ints.unsigned);
            default = null;
            description = ''
              The system profile's generation on the host after the deployment
              (unset when the host has no system profile, e.g. after `test` on a
              fresh host).
            '';
          };
          keys = mkOption {
            type = types.listOf (types.str);
            description = ''
              Paths of the keys on the host.
            '';
          };
          pathsCopied = mkOption {
            type = types.ints.unsigned;
            description = ''
              How many store paths were copied to the host (0 when it had them).
            '';
          };
          previousSystem = mkOption {
            type = types.nullOr (types.str);
            default = null;
            description = ''
              The system the host ran before (unset when it ran none).
            '';
          };
          system = mkOption {
            type = types.str;
            description = ''
              The deployed system's store path.
            '';
          };
        };
      };
    };
  };
}
