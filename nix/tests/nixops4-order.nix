# One operator's members as NixOps4 evaluates them, builtins only (no
# nixpkgs lib, so CI can run it; ./glue.nix does the same inside the module
# system): the members of nix/nixops4/resources.nix, an operator `alice` at
# the root, each member's outputs loaded through `nixops4-eval`'s fixpoint
# (./nixops4-eval.nix), so known only from what the providers returned.
#
#   (import nix/tests/nixops4-order.nix {
#     panelFile = ./panel.json;                 # or panel = { ... };
#     hostingFile = ./hosting.nix;              # [hostingArgs = { ... };]
#     outputNames = { ssh-key.keypair = [ "publicKey" ... ]; ... };
#     returned = { deployer-key = { publicKey = "..."; ... }; };  # default: nothing applied
#   }).members."mastodon-vm".resource.inputs
#
# NixOps4 forces one member at a time: its `type`, `provider`, `state`,
# then its inputs (rust/nixops4/src/work.rs `resolve_resource_inputs`), and
# applies it once they evaluate. An input that needs an output of a member
# not applied yet fails with "... is not applied yet ..."; one that needs an
# output its provider did not return fails with NixOps4's "Resource
# alice.<member> does not have output <name>".
{
  panel ? null,
  panelFile ? null,
  hostingFile,
  hostingArgs ? { },
  # The declared output names of each resource type, by provider (what the
  # generated nix/providers/*.nix turn into `outputsSkeleton`).
  outputNames,
  # The outputs of alice's applied members, by name, as returned.
  returned ? { },
}:
let
  inherit (builtins) listToAttrs mapAttrs;

  providers = mapAttrs (
    _: types:
    mapAttrs (type: names: {
      inherit type;
      outputsSkeleton = listToAttrs (
        map (name: {
          inherit name;
          value = { };
        }) names
      );
    }) types
  ) outputNames;

  configuration = import ./nixops4-eval.nix {
    resourceProviderSystem = "x86_64-linux";
    returned = {
      alice = returned;
    };
  } evalRoot;

  # What nixops4 nix/component/resource.nix `_resourceForNixOps` exports.
  evalRoot =
    { outputValues, ... }:
    let
      result = import ../nixops4/resources.nix {
        inherit
          panel
          panelFile
          hostingFile
          hostingArgs
          providers
          ;
        members = mapAttrs (_: outputs: { inherit outputs; }) outputValues.alice;
        state = {
          absoluteMemberPath = [ "state" ];
        };
        buildSystem =
          { application, service, ... }:
          # As a real build would: the system needs the whole service.
          builtins.deepSeq service "/nix/store/11111111111111111111111111111111-nixos-system-${application}";
      };
    in
    {
      config._export.members.alice.members = mapAttrs (_: member: {
        resource = {
          inherit (member) inputs;
          type = member.type.type;
          inherit (member.type) outputsSkeleton;
          state = if member ? state then member.state.absoluteMemberPath else null;
        };
      }) result.members;
    };
in
{
  members = configuration.config._export.members.alice.members;
}
