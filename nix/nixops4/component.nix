# The cluster configurator as a NixOps4 component: an operator's panel and
# the hosting configuration in, one member per resource of the configurator's
# graph out (deployer key, VMs, buckets, access keys, DNS records, NixOS
# deployments), wired by references to each other's outputs.
#
# The flake exposes it as `modules.nixops4Component.fediversity`:
#
#   members.alice = {
#     imports = [ inputs.fediversity-providers.modules.nixops4Component.fediversity ];
#     fediversity.panelFile = ./alice/panel.json;
#     fediversity.hostingFile = ./hosting.nix;
#     fediversity.state = members.state;
#   };
#
# A NixOps4 component has its own `providers`: this one declares this
# flake's providers under their own names (`providers.proxmox-vm`, ...), at
# default priority so that a deployment can replace any of them.
{
  # This flake's `modules.nixops4Provider`, by provider name.
  providerModules,
  # The nixpkgs flake the VMs' NixOS systems are built with by default.
  nixpkgs,
}:
{
  config,
  lib,
  providers,
  members,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.fediversity;

  result = import ./resources.nix {
    inherit (cfg)
      panel
      panelFile
      hosting
      hostingFile
      hostingArgs
      peers
      state
      buildSystem
      ;
    inherit providers members;
  };

  buildNixos = import ../nixos/system.nix {
    inherit (cfg.nixos) nixpkgs system modules;
  };
in
{
  options.fediversity = {
    panel = mkOption {
      type = types.nullOr types.attrs;
      default = null;
      description = ''
        The operator's choices, as the FediPanel writes them (see
        nix/configurator/README.md), as a value. Give this or `panelFile`.
      '';
    };
    panelFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./panel.json";
      description = ''
        The FediPanel's JSON file. Give this or `panel`.
      '';
    };
    hosting = mkOption {
      type = types.nullOr types.attrs;
      default = null;
      description = ''
        The hosting provider's runtime configuration (Proxmox, Garage, DNS,
        deployer directories; nix/configurator/hosting.nix), as a value.
        Secrets in it are references (`{ file = ...; }`, `{ env = ...; }`),
        never literal. Give this or `hostingFile`.
      '';
    };
    hostingFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./hosting.nix";
      description = ''
        A Nix file holding the hosting configuration: a set, or a function,
        which is called with `hostingArgs`. Give this or `hosting`.
      '';
    };
    hostingArgs = mkOption {
      type = types.attrs;
      default = { };
      example = lib.literalExpression "{ backends = lib.importJSON ./backends.json; }";
      description = ''
        What `hostingFile` is called with when it holds a function, e.g.
        `backends` for examples/local/hosting.nix.
      '';
    };
    peers = mkOption {
      type = types.attrsOf types.attrs;
      default = { };
      example = lib.literalExpression "{ bob = { panelFile = ./bob/panel.json; }; }";
      description = ''
        The other operators on the same hosting provider, by name, each
        `{ panelFile = ...; }` or `{ panel = ...; }`. The member set fails,
        naming both operators, when one of this operator's resources would
        share a name on a backend (VM, bucket, Garage key, file on the
        deploying machine, DNS record) with one of theirs.
      '';
    };
    state = mkOption {
      type = types.raw;
      example = lib.literalExpression "members.state";
      description = ''
        The state storage resource (e.g. a `local.state_file` member) of the
        resources whose providers require state: the deployer key, the VMs,
        the buckets and the access keys.
      '';
    };
    nixos = {
      nixpkgs = mkOption {
        type = types.raw;
        default = nixpkgs;
        defaultText = lib.literalMD "this flake's `nixpkgs` input";
        description = ''
          The nixpkgs flake the VMs' NixOS systems are built with.
        '';
      };
      system = mkOption {
        type = types.str;
        default = "x86_64-linux";
        description = ''
          The VMs' platform (`nixpkgs.hostPlatform`).
        '';
      };
      modules = mkOption {
        type = types.listOf types.raw;
        default = [ ];
        description = ''
          NixOS modules added to every VM's system, e.g. the hosting
          provider's monitoring, or the Nix signing key the VMs trust
          (`nix.settings.trusted-public-keys`) when deployments check
          signatures.
        '';
      };
    };
    buildSystem = mkOption {
      type = types.functionTo types.raw;
      default = args: "${(buildNixos args).config.system.build.toplevel}";
      defaultText = lib.literalMD "`nix/nixos/system.nix` with `fediversity.nixos.*`";
      description = ''
        `{ application, service, sshUser }` to the store path of the NixOS
        system deployed onto that application's VM. Referring to the path
        builds the system before the deployment runs.
      '';
    };
    graph = mkOption {
      type = types.raw;
      readOnly = true;
      description = ''
        The configurator's resource graph, outputs referenced: `urls`,
        `seams` (where the generated admin password lives, what e-mail will
        need), `resources`.
      '';
    };
    services = mkOption {
      type = types.raw;
      readOnly = true;
      description = ''
        What each application's NixOS system is built from, by application.
      '';
    };
  };

  config = {
    providers = lib.mapAttrs (_: lib.mkDefault) providerModules;
    members = result.members;
    fediversity.graph = result.graph;
    fediversity.services = result.services;
  };
}
