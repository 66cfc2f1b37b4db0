# A STAND-IN for NixOps4's component modules, NOT NixOps4: just enough of
# its module interface (nixops4 `nix/component/*.nix` and `lib.evalRoot`,
# commit 53d8554) to evaluate the Fediversity component where NixOps4 is not
# available:
#
#   - `providers.<name>` takes a provider module (name, description,
#     sourceBaseUrl, sourceName, executable, args, type,
#     resourceTypes.<type>.{description, requireState, inputs, outputs});
#     the `providers` module argument gives the resource types, each with
#     its `outputsSkeleton` (the output names);
#   - `members.<name>` is a component: with `type` a resource (`inputs`
#     checked against the type's input options, `outputs` set from the
#     given output values, `state` a reference to another member), without
#     it a composite with its own `providers` and `members`;
#   - `evalRoot modules { resourceProviderSystem, outputValues }` evaluates
#     a root component; `config._export` is what NixOps4 would read:
#     `{ members.<name> = { resource = { type, provider, inputs, state,
#     outputsSkeleton }; } or { members = ...; }; }`. A resource's
#     `outputs` are set from `outputValues` at its path, as lib.nix
#     `makeOutputInjector` does, so its output options' defaults never
#     apply.
#
# `outputValues` comes from ./nixops4-eval.nix, the outputs fixpoint of
# `nixops4-eval` (each output loaded on demand, known only if the provider
# returned it), which the glue test runs around this and the real modules
# alike. What the stand-in does not do: run anything, order resources,
# check types of outputs the way the module system of NixOps4's
# `outputs` submodule would. Run nix/tests/glue.nix with
# `-I nixops4=<checkout>` to evaluate against the real modules instead.
{ lib }:
let
  inherit (lib) mkIf mkOption types;

  resourceTypeModule =
    provider:
    { name, config, ... }:
    {
      options = {
        description = mkOption { type = types.str; };
        requireState = mkOption { type = types.bool; };
        inputs = mkOption { type = types.deferredModule; };
        outputs = mkOption { type = types.deferredModule; };
        type = mkOption {
          type = types.str;
          default = name;
        };
        outputsSkeleton = mkOption {
          type = types.raw;
          readOnly = true;
        };
        provider = mkOption {
          type = types.raw;
          readOnly = true;
        };
      };
      config = {
        outputsSkeleton = lib.mapAttrs (_: _: { }) (
          removeAttrs (lib.evalModules { modules = [ config.outputs ]; }).options [ "_module" ]
        );
        provider = {
          inherit (provider) executable args type;
        };
      };
    };

  # nixops4 nix/provider/provider.nix and provider-doc.nix: `name`,
  # `description`, `sourceBaseUrl` and `sourceName` have no default
  # (`renderProviderDocs` reads them all).
  providerModule =
    { config, ... }:
    {
      options = {
        name = mkOption { type = types.str; };
        description = mkOption { type = types.str; };
        sourceBaseUrl = mkOption { type = types.str; };
        sourceName = mkOption { type = types.str; };
        executable = mkOption { type = types.str; };
        args = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        type = mkOption {
          type = types.str;
          default = "stdio";
        };
        resourceTypes = mkOption {
          type = types.lazyAttrsOf (types.submodule (resourceTypeModule config));
        };
      };
    };

  component =
    { resourceProviderSystem, outputValues }:
    path:
    {
      config,
      options,
      ...
    }:
    {
      options = {
        providers = mkOption {
          type = types.lazyAttrsOf (
            types.submoduleWith {
              modules = [ providerModule ];
              specialArgs = { inherit resourceProviderSystem; };
            }
          );
          default = { };
        };
        members = mkOption {
          type = types.lazyAttrsOf (
            types.submoduleWith {
              modules = [
                (
                  { name, ... }:
                  {
                    imports = [ (component { inherit resourceProviderSystem outputValues; } (path ++ [ name ])) ];
                  }
                )
              ];
            }
          );
          default = { };
        };
        type = mkOption { type = types.raw; };
        inputs = mkOption { type = types.submodule { }; };
        outputs = mkOption { type = types.submodule { }; };
        state = mkOption {
          type = types.nullOr types.raw;
          default = null;
        };
        absoluteMemberPath = mkOption {
          type = types.listOf types.str;
          readOnly = true;
          default = path;
        };
        _export = mkOption {
          type = types.raw;
          readOnly = true;
        };
      };
      config = {
        _module.args.providers = lib.mapAttrs (
          _: provider: lib.mapAttrs (_: t: t // { _type = "nixops4ResourceType"; }) provider.resourceTypes
        ) config.providers;
        _module.args.members = config.members;

        inputs = mkIf options.type.isDefined ({ ... }: { imports = [ config.type.inputs ]; });
        outputs = mkIf options.type.isDefined (
          { ... }:
          {
            imports = [ config.type.outputs ];
            # lib.nix `makeOutputInjector`: `config = outputsForThis`.
            config = lib.attrByPath path { } outputValues;
          }
        );

        _export =
          if options.type.isDefined then
            {
              resource = {
                type = config.type.type;
                inherit (config.type) provider outputsSkeleton;
                inputs = config.inputs;
                state =
                  if config.type.requireState && config.state == null then
                    throw "stand-in: ${lib.showOption (path ++ [ "state" ])} has not been defined"
                  else if config.state == null then
                    null
                  else
                    config.state.absoluteMemberPath;
              };
            }
          else
            { members = lib.mapAttrs (_: member: member._export) config.members; };
      };
    };
in
{
  evalRoot =
    modules:
    { resourceProviderSystem, outputValues }:
    lib.evalModules {
      modules = [ (component { inherit resourceProviderSystem outputValues; } [ ]) ] ++ modules;
    };
}
