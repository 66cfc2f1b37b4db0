# The NixOS system of one application's VM, from the configurator's
# `service` value (resources.<app>-deployment.service):
#
#   (import ./system.nix { nixpkgs = inputs.nixpkgs; }) {
#     application = "mastodon";
#     service = graph.resources.mastodon-deployment.service;
#     sshUser = "root";
#   }
#
# returns the `nixpkgs.lib.nixosSystem` evaluation; deploy its
# `config.system.build.toplevel`.
{
  # A nixpkgs flake (it has `lib.nixosSystem`).
  nixpkgs,
  # The VMs' platform.
  system ? "x86_64-linux",
  # More NixOS modules for every VM (the hosting provider's own).
  modules ? [ ],
}:
{
  application,
  service,
  # The user the deployment logs in as (the hosting configuration's
  # `deployer.sshUser`).
  sshUser ? "root",
}:
let
  applicationModules = {
    mastodon = ./mastodon.nix;
    pixelfed = ./pixelfed.nix;
    peertube = ./peertube.nix;
  };
in
if !(applicationModules ? ${application}) then
  throw "fediversity NixOS system: no service module for application \"${application}\" (there are: ${builtins.concatStringsSep ", " (builtins.attrNames applicationModules)}). Fix: add nix/nixos/${application}.nix and list it in nix/nixos/system.nix."
else
  nixpkgs.lib.nixosSystem {
    modules = [
      ./base.nix
      applicationModules.${application}
      {
        nixpkgs.hostPlatform = system;
        fediversity = {
          inherit service sshUser;
        };
      }
    ]
    ++ modules;
  }
