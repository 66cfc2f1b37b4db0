# How `nixops4-eval` evaluates a root, imitated for tests (builtins only):
# the outputs fixpoint of nixops4 rust/nixops4-eval/src/eval.rs,
# `evaluate_root_component`, and what its primop `nixopsLoadMemberOutput`
# and the scheduler (rust/nixops4/src/work.rs) make of an output.
#
#   import ./nixops4-eval.nix {
#     # What the providers returned, by member path: the resources applied
#     # so far, each with exactly the outputs in its provider's response.
#     returned = { state = { }; alice = { deployer-key = { publicKey = "..."; ... }; }; };
#     resourceProviderSystem = "x86_64-linux";
#   } evalRoot
#
# where `evalRoot { resourceProviderSystem, outputValues }` evaluates the
# root (nixops4 nix/lib/lib.nix `evalRoot`, or the stand-in's) and returns
# the module system's configuration; this returns it with `outputValues`
# taken from the configuration's own `config._export`.
#
# Outputs are known only from `returned`: NixOps4 publishes exactly the
# properties of a provider's response (work.rs `publish_resource_outputs`,
# one `PutResourceOutput` each). The output options' defaults never apply,
# because every name of a resource's `outputsSkeleton` is set.
{
  returned,
  resourceProviderSystem,
}:
evalRoot:
let
  inherit (builtins)
    concatStringsSep
    head
    isAttrs
    mapAttrs
    tail
    ;

  lookup =
    path: set:
    if path == [ ] then
      set
    else if isAttrs set && set ? ${head path} then
      lookup (tail path) set.${head path}
    else
      null;

  # `nixopsLoadMemberOutput componentPath memberName attrName ignored`: the
  # published value, else a dependency exception on which NixOps4 applies
  # the resource and evaluates again. Once the resource is applied, a name
  # its response lacks is an error (work.rs
  # `perform_get_resource_output_value`).
  loadMemberOutput =
    path: name: attr: _:
    let
      resourcePath = path ++ [ name ];
      outputs = lookup resourcePath returned;
    in
    if outputs == null then
      throw "nixops4-eval (test): ${concatStringsSep "." resourcePath} is not applied yet; NixOps4 would apply it for its output ${attr} and evaluate again"
    else if outputs ? ${attr} then
      outputs.${attr}
    else
      throw "Resource ${concatStringsSep "." resourcePath} does not have output ${attr}";

  # eval.rs `makeMemberOutputs`: a resource member's outputs are its
  # skeleton's names, each loaded on demand; a composite recurses.
  makeMemberOutputs =
    path: export:
    mapAttrs (
      name: memberExport:
      if memberExport ? resource then
        mapAttrs (loadMemberOutput path name) (
          memberExport.resource.outputsSkeleton
            or (throw "Resource ${name} does not declare its outputs via outputsSkeleton. This is an implementation error in the resource provider.")
        )
      else
        makeMemberOutputs (path ++ [ name ]) memberExport
    ) (export.members or { });

  # eval.rs: `fixpoint = rootFunction (makeArguments fixpoint)`, with
  # `rootFunction` = mkRoot's `args: (evalRoot baseArgs args).config._export`.
  configuration = evalRoot {
    inherit resourceProviderSystem;
    outputValues = makeMemberOutputs [ ] configuration.config._export;
  };
in
configuration
