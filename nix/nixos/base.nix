# What every Fediversity VM runs, whatever its application: the deployer's
# SSH access, the QEMU guest agent (the proxmox-vm provider reads the VM's
# addresses and SSH host key through it), cloud-init, and helpers that turn
# the secret files the deployment uploads to /run/keys into what the
# services read.
#
# The disk layout and boot loader are those of nixpkgs' Proxmox image
# (virtualisation/proxmox-image.nix): build the hosting provider's VM
# template from the same module (its `config.system.build.VMA`, restored
# with `qmrestore` and turned into a template), so that a deployed system
# boots on a clone.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  inherit (lib)
    concatStringsSep
    escapeShellArg
    mapAttrs'
    mapAttrsToList
    mkDefault
    mkIf
    mkOption
    nameValuePair
    types
    ;
  cfg = config.fediversity;
  service = cfg.service;
  secretsDir = "/var/lib/fediversity/secrets";
  envDir = "/run/fediversity";
in
{
  imports = [ "${modulesPath}/virtualisation/proxmox-image.nix" ];

  options.fediversity = {
    service = mkOption {
      type = types.raw;
      description = ''
        The configurator's `service` value for this VM
        (`resources.<app>-deployment.service` of its graph): application,
        domain, settings, admin account, S3 endpoint, buckets and key,
        the deployer's public keys.
      '';
    };

    sshUser = mkOption {
      type = types.str;
      default = "root";
      description = ''
        The user the deployment logs in as: `root`, or a user this module
        creates with passwordless sudo (the hosting configuration's
        `deployer.sshUser`).
      '';
    };

    generatedSecrets = mkOption {
      description = ''
        Secrets the VM generates for itself once and keeps on its disk
        (application keys that never leave the VM), under ${secretsDir}.
      '';
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              bytes = mkOption {
                type = types.ints.positive;
                default = 32;
                description = "Random bytes.";
              };
              encoding = mkOption {
                type = types.enum [
                  "base64"
                  "hex"
                ];
                default = "base64";
                description = "How the bytes are written.";
              };
              owner = mkOption {
                type = types.str;
                default = "root";
                description = "Owner of the file (mode 0400).";
              };
              requiredBy = mkOption {
                type = types.listOf types.str;
                default = [ ];
                description = "Units that need the secret; they start after it exists.";
              };
              path = mkOption {
                type = types.str;
                readOnly = true;
                default = "${secretsDir}/${name}";
                description = "Where the secret is.";
              };
            };
          }
        )
      );
    };

    secretEnvFiles = mkOption {
      description = ''
        Environment files (`VARIABLE=value` lines, mode 0600, root) made at
        boot from secret files, for services that take secrets only from
        their environment. systemd reads them as root, so the secret files
        may stay root's own. Written under ${envDir} (a tmpfs).
      '';
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              variables = mkOption {
                description = ''
                  Variable name to the file holding its value (one line), or
                  `{ file; prefix; }` when the value needs a fixed prefix.
                '';
                type = types.attrsOf (
                  types.coercedTo types.str (file: { inherit file; }) (
                    types.submodule {
                      options = {
                        file = mkOption { type = types.str; };
                        prefix = mkOption {
                          type = types.str;
                          default = "";
                        };
                      };
                    }
                  )
                );
              };
              requiredBy = mkOption {
                type = types.listOf types.str;
                default = [ ];
                description = "Units that read the file; they start after it is written.";
              };
              path = mkOption {
                type = types.str;
                readOnly = true;
                default = "${envDir}/${name}.env";
                description = "Where the file is.";
              };
            };
          }
        )
      );
    };
  };

  config = {
    # The deployer logs in with the key the configurator made for this
    # operator (the same one cloud-init installed on first boot).
    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = if cfg.sshUser == "root" then "prohibit-password" else "no";
      };
    };
    users.users.${cfg.sshUser} =
      {
        openssh.authorizedKeys.keys = service.ssh.authorizedKeys;
      }
      // lib.optionalAttrs (cfg.sshUser != "root") {
        isNormalUser = true;
        extraGroups = [ "wheel" ];
      };
    # nixos-config runs its remote steps through `sudo -n` for a non-root user.
    security.sudo.wheelNeedsPassword = mkIf (cfg.sshUser != "root") false;

    # The proxmox-vm provider waits for the agent to report the addresses
    # and reads the SSH host key through it.
    services.qemuGuest.enable = true;

    # The applications are served by nginx with Let's Encrypt certificates;
    # the operator's admin address is the ACME contact unless the hosting
    # provider sets its own.
    networking.firewall.allowedTCPPorts = [
      80
      443
    ];
    security.acme = {
      acceptTerms = mkDefault true;
      defaults.email = mkDefault service.admin.email;
    };

    # Fixed for the life of a VM: NixOS uses it to keep state formats
    # (PostgreSQL's data directory, ...) compatible. Never raise it on a
    # running VM; new VMs may get a newer one from the hosting provider's
    # modules (`fediversity.nixos.modules`).
    system.stateVersion = mkDefault "25.05";

    # /run/keys (a ramfs NixOS mounts, root:keys 0750) receives the
    # deployment's secret files: s3-secret-key, admin-password. They are
    # gone after a reboot until the next deployment uploads them again.

    systemd.services =
      mapAttrs' (
        name: secret:
        nameValuePair "fediversity-secret-${name}" {
          description = "Fediversity: generate the VM's secret ${name} once";
          wantedBy = [ "multi-user.target" ];
          inherit (secret) requiredBy;
          before = secret.requiredBy;
          path = [ pkgs.coreutils ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            UMask = "0077";
          };
          script = ''
            set -euo pipefail
            if [ -s ${escapeShellArg secret.path} ]; then exit 0; fi
            # Traversable, not listable: a secret's owner may be a service user.
            install -d -m 0711 ${dirOf secretsDir} ${secretsDir}
            tmp=$(mktemp ${secretsDir}/.${name}.XXXXXX)
            trap 'rm -f "$tmp"' EXIT
            head -c ${toString secret.bytes} /dev/urandom | ${
              if secret.encoding == "base64" then "base64 -w0" else "od -An -v -tx1 | tr -d ' \\n'"
            } > "$tmp"
            chown ${escapeShellArg secret.owner} "$tmp"
            chmod 0400 "$tmp"
            mv "$tmp" ${escapeShellArg secret.path}
            trap - EXIT
          '';
        }
      ) cfg.generatedSecrets
      // mapAttrs' (
        name: envFile:
        nameValuePair "fediversity-env-${name}" {
          description = "Fediversity: environment file ${name} from secret files";
          wantedBy = [ "multi-user.target" ];
          inherit (envFile) requiredBy;
          before = envFile.requiredBy;
          after = mapAttrsToList (secret: _: "fediversity-secret-${secret}.service") cfg.generatedSecrets;
          wants = mapAttrsToList (secret: _: "fediversity-secret-${secret}.service") cfg.generatedSecrets;
          path = [ pkgs.coreutils ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            UMask = "0077";
          };
          # Values are checked to be one safe token: the files are read by
          # systemd (EnvironmentFile=) and by shells (`source`), and a value
          # that needs quoting would mean something different to each.
          # Errors name the file, never its content.
          script = ''
            set -euo pipefail
            # Prints the file's value; a plain assignment `v=$(value f)` keeps
            # its failure fatal under `set -e`.
            value() {
              if [ ! -r "$1" ]; then
                echo "fediversity: $1 is missing (the deployment uploads the files in /run/keys; after a reboot, deploy again)" >&2
                exit 1
              fi
              local v
              v=$(cat "$1")
              case "$v" in
                "" | *[!A-Za-z0-9+/=._:-]*)
                  echo "fediversity: $1 must hold one line of letters, digits and +/=._:- for an environment file" >&2
                  exit 1 ;;
              esac
              printf '%s' "$v"
            }
            mkdir -p ${envDir}
            tmp=$(mktemp ${envDir}/.${name}.XXXXXX)
            trap 'rm -f "$tmp"' EXIT
            ${concatStringsSep "\n" (
              mapAttrsToList (
                variable: source:
                ''
                  v=$(value ${escapeShellArg source.file})
                  printf '%s=%s%s\n' ${escapeShellArg variable} ${escapeShellArg source.prefix} "$v" >> "$tmp"
                ''
              ) envFile.variables
            )}
            mv "$tmp" ${escapeShellArg envFile.path}
            trap - EXIT
          '';
        }
      ) cfg.secretEnvFiles;
  };
}
