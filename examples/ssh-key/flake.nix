# A NixOps4 deployment with one deployer key, whose public half is written
# to a file (in a real deployment: cloud-init of a VM, `authorized_keys`).
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
    inputs@{ flake-parts, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      imports = [ inputs.nixops4.modules.flake.default ];
      systems = [ "x86_64-linux" ];
      nixops4 =
        { providers, members, ... }:
        {
          providers.local = inputs.nixops4.modules.nixops4Provider.local;
          providers.ssh-key = inputs.fediversity-providers.modules.nixops4Provider.ssh-key;

          members.example = {
            # The key must persist, so the deployment keeps state.
            members.state = {
              type = providers.local.state_file;
              inputs.name = "nixops4-state.json";
            };

            members.deployer-key = {
              type = providers.ssh-key.keypair;
              state = members.example.members.state;
              inputs = {
                privateKeyPath = "/var/lib/fediversity/keys/deployer";
                comment = "deployer@example.org";
                # Change to any other value to rotate the key.
                rotationTrigger = 1;
              };
            };

            members."authorized_keys" = {
              type = providers.local.file;
              inputs.name = "authorized_keys";
              inputs.contents = members.example.members.deployer-key.outputs.publicKey + "\n";
            };
          };
        };
    };
}
