# The checks of ./glue.nix, as a function: `import ./glue-checks.nix { lib;
# nixops4 ? null; }` (the flake's `checks` call it with nixpkgs' lib). See
# ./glue.nix for what it checks and how to run it.
{
  # nixpkgs' lib.
  lib,
  # A NixOps4 checkout, or null for the stand-in.
  nixops4 ? null,
}:
let
  inherit (builtins)
    all
    attrNames
    deepSeq
    elem
    elemAt
    filter
    genList
    isAttrs
    isList
    length
    mapAttrs
    toJSON
    tryEval
    ;
  configurator = import ../configurator;

  panelFile = ../../examples/fediversity/panel.json;
  hostingFile = ../../examples/fediversity/hosting.nix;
  system = "x86_64-linux";

  # The generated provider modules, with fake packages.
  fakePackage = name: _system: "/nix/store/00000000000000000000000000000000-fedi-${name}";
  providerNames = [
    "ssh-key"
    "proxmox-vm"
    "garage-bucket"
    "dns-record"
    "nixos-config"
  ];
  providerModules = lib.genAttrs providerNames (
    name: import ../providers/${name}.nix { package = fakePackage name; }
  );
  fakeSystem = app: "/nix/store/11111111111111111111111111111111-nixos-system-${app}";

  # What holds the state: any resource does, for an evaluation.
  stateProvider =
    { lib, ... }:
    {
      name = "test-state";
      description = "State storage for the glue test.";
      executable = "/nix/store/22222222222222222222222222222222-test-state/bin/test-state";
      resourceTypes.state_file = {
        description = "A state file.";
        requireState = false;
        inputs.options.name = lib.mkOption { type = lib.types.str; };
        outputs.options = { };
      };
    };

  # The deployment a hosting provider would write: one operator, `alice`,
  # as a member of the root, its state in a root member.
  rootModule =
    { providers, members, ... }:
    {
      providers.test-state = stateProvider;
      members.state = {
        type = providers.test-state.state_file;
        inputs.name = "state.json";
      };
      members.alice = {
        imports = [
          (import ../nixops4/component.nix {
            inherit providerModules;
            nixpkgs = null;
          })
        ];
        fediversity = {
          inherit panelFile hostingFile;
          state = members.state;
          buildSystem = { application, ... }: fakeSystem application;
        };
      };
    };

  evalRoot =
    if nixops4 == null then
      (import ./nixops4-standin.nix { inherit lib; }).evalRoot
    else
      modules:
      (import (nixops4 + "/nix/lib/lib.nix") {
        inherit lib;
        self = null;
        selfWithSystem = null;
      }).evalRoot
        {
          prefix = [ ];
          specialArgs = { };
          modules = [ (nixops4 + "/nix/component/base-modules.nix") ] ++ modules;
        };

  evaluate =
    outputs:
    evalRoot [ rootModule ] {
      resourceProviderSystem = system;
      outputValues = {
        state = { };
        alice = outputs;
      };
    };

  # The graph's shape, and the graph the pure configurator makes once every
  # output is known: what the members' inputs must hold.
  shape = configurator.configureFiles { inherit panelFile hostingFile; };
  names = attrNames shape.resources;
  applications = attrNames shape.urls;
  outputs = import ./fake-outputs.nix shape.resources;
  expected = configurator.configure {
    panel = builtins.fromJSON (builtins.readFile panelFile);
    hosting = import hostingFile { };
    inherit outputs;
    systems = lib.genAttrs applications fakeSystem;
  };

  applied = evaluate outputs;
  exported = applied.config._export.members.alice.members;
  component = applied.config.members.alice.fediversity;
  resource = name: exported.${name}.resource;

  # The same with the outputs of the Mastodon VM not known yet: NixOps4
  # gives such an output as a value that fails when forced.
  notApplied = "mastodon-vm";
  pending =
    (evaluate (
      outputs
      // {
        ${notApplied} = mapAttrs (
          output: _: throw "glue test: output ${notApplied}.${output} was forced"
        ) outputs.${notApplied};
      }
    )).config._export.members.alice.members;
  dependsOnVm = [
    "mastodon-dns-a"
    "mastodon-dns-aaaa"
    "mastodon-deployment"
  ];
  forces = value: !(tryEval (deepSeq value true)).success;

  # `expected` is contained in `actual`: the module system adds the
  # options' defaults, nothing else may differ.
  contains =
    expected: actual:
    if isAttrs expected then
      isAttrs actual && all (k: actual ? ${k} && contains expected.${k} actual.${k}) (attrNames expected)
    else if isList expected then
      isList actual
      && length expected == length actual
      && all (i: contains (elemAt expected i) (elemAt actual i)) (genList (i: i) (length expected))
    else
      expected == actual;
  noPlaceholder =
    value:
    let
      json = toJSON value;
    in
    !(lib.hasInfix "__output" json) && !(lib.hasInfix "__system" json);

  checks = {
    "one member per graph resource" = attrNames exported == names;
    "each member's type is the graph's provider and resource type" = all (
      name:
      let
        r = shape.resources.${name};
      in
      (resource name).type == r.type
      && (resource name).provider.executable == "${fakePackage r.provider system}/bin/fedi-${r.provider}"
    ) names;
    "state storage exactly where the graph requires state" = all (
      name: (resource name).state == (if shape.resources.${name}.state == "required" then [ "state" ] else null)
    ) names;
    "each member's inputs are the graph's inputs with the outputs filled in" = all (
      name: contains expected.resources.${name}.inputs (resource name).inputs
    ) names;
    "no __output or __system placeholder in any input" = noPlaceholder (
      mapAttrs (name: _: (resource name).inputs) exported
    );
    "each deployment deploys the system built from its service" = all (
      app: (resource "${app}-deployment").inputs.system == fakeSystem app
    ) applications;
    "services hold outputs, not placeholders" =
      noPlaceholder component.services
      && component.services.mastodon.s3.accessKeyId == outputs.mastodon-s3-key.accessKeyId
      && component.services.mastodon.ssh.authorizedKeys == [ outputs.deployer-key.publicKey ];
    "the outputs offered are the providers' declared outputs" = all (
      name: attrNames (resource name).outputsSkeleton == attrNames outputs.${name}
    ) names;
    "members, types and state are known before any output" =
      attrNames pending == names
      && all (name: !(forces (with pending.${name}.resource; [ type state provider ]))) names;
    "an input using an unapplied resource's output refers to it" =
      forces pending.mastodon-dns-a.resource.inputs.values
      && forces pending.mastodon-deployment.resource.inputs.host
      && forces pending.mastodon-deployment.resource.inputs.hostPublicKey;
    "no other input forces an unapplied resource's output" = all (
      name: !(forces pending.${name}.resource.inputs)
    ) (filter (name: !(elem name dependsOnVm)) names);
  };
  failed = filter (name: !checks.${name}) (attrNames checks);
  against = if nixops4 == null then "stand-in" else "nixops4";
in
if failed != [ ] then
  throw "glue test (against the ${against}): failed: ${builtins.concatStringsSep "; " failed}"
else
  {
    inherit against;
    passed = attrNames checks;
  }
