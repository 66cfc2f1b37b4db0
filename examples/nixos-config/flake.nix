# A NixOps4 deployment that puts a NixOS configuration, built with
# `nixpkgs.lib.nixosSystem`, onto an existing host over SSH, with one secret
# file beside it. Not runnable here (it needs nixpkgs and a host); copy it.
#
#   nix flake lock --override-input fediversity-providers path:../..
#   nixops4 apply
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    nixops4.url = "github:nixops4/nixops4";
    fediversity-providers.url = "path:../..";
  };

  outputs =
    inputs@{ flake-parts, nixpkgs, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      imports = [ inputs.nixops4.modules.flake.default ];
      systems = [ "x86_64-linux" ];

      # The host's configuration, as usual.
      flake.nixosConfigurations.web1 = nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [
          ./hardware-configuration.nix
          {
            services.openssh.enable = true;
            users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA... deployer" ];
            # The secret uploaded below lands in /run/keys/s3-secret.
            system.stateVersion = "25.05";
          }
        ];
      };

      nixops4 =
        { providers, members, ... }:
        {
          providers.nixos-config = inputs.fediversity-providers.modules.nixops4Provider.nixos-config;

          members.web1 = {
            type = providers.nixos-config.deployment;
            inputs = {
              # Referring to the toplevel builds it before the deployment runs.
              system = "${inputs.self.nixosConfigurations.web1.config.system.build.toplevel}";
              host = "web1.example.org";
              sshKeyFile = "/var/lib/fediversity/keys/deployer";
              # Pinned: take it from the host out of band.
              hostPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... root@web1";
              goal = "switch"; # or "boot", "test", "dry-activate"
              # magicRollback = true;  (default for switch and test)
              confirmTimeout = 30;
              keys = [
                {
                  name = "s3-secret";
                  file = "/var/lib/fediversity/secrets/web1-s3"; # read on the deployer
                  owner = "root";
                  permissions = "0600";
                }
              ];
            };
          };
          # elsewhere: members.web1.outputs.generation, .changed
        };
    };
}
