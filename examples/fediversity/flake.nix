# A full operator deployment from the FediPanel's JSON: for each operator,
# the configurator's NixOps4 component turns the panel and the hosting
# configuration into the deployer key, and per enabled application a VM, its
# buckets and access key, DNS records and the NixOS deployment of the
# application. See README.md next to this file.
#
#   nix flake lock --override-input fediversity-providers path:../..
#   nixops4 apply                # every operator
#   nixops4 apply alice          # one operator
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    nixops4.url = "github:nixops4/nixops4";
    fediversity-providers.url = "path:../..";
    # The VMs' NixOS systems are built with the providers' nixpkgs unless a
    # component sets `fediversity.nixos.nixpkgs`.
    fediversity-providers.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs =
    inputs@{ flake-parts, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      imports = [ inputs.nixops4.modules.flake.default ];
      systems = [ "x86_64-linux" ];
      nixops4 =
        { providers, members, ... }:
        let
          fediversity = inputs.fediversity-providers.modules.nixops4Component.fediversity;
        in
        {
          # Each operator component declares this flake's providers itself;
          # declaring them here too lets NixOps4 build them ahead of time (it
          # collects the root's providers only).
          providers = inputs.fediversity-providers.modules.nixops4Provider // {
            local = inputs.nixops4.modules.nixops4Provider.local;
          };

          # The state of every operator's keys, VMs, buckets and access keys.
          members.state = {
            type = providers.local.state_file;
            inputs.name = "nixops4-state.json";
          };

          # Operator alice: Mastodon, Pixelfed (as photos.) and PeerTube.
          members.alice = {
            imports = [ fediversity ];
            fediversity = {
              panelFile = ./panel.json;
              hostingFile = ./hosting.nix;
              # Refused if any backend name would be shared with bob's.
              peers.bob.panelFile = ./panel-mastodon.json;
              state = members.state;
            };
          };

          # Operator bob: Mastodon only.
          members.bob = {
            imports = [ fediversity ];
            fediversity = {
              panelFile = ./panel-mastodon.json;
              hostingFile = ./hosting.nix;
              peers.alice.panelFile = ./panel.json;
              state = members.state;
            };
          };
        };
    };
}
