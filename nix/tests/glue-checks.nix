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
    concatStringsSep
    deepSeq
    elem
    elemAt
    filter
    fromJSON
    genList
    isAttrs
    isList
    isString
    length
    mapAttrs
    readFile
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
  # as a member of the root, its state in a root member. `settings` are
  # alice's panel and hosting configuration (`fediversity.*`).
  rootModule =
    settings:
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
        fediversity = settings // {
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

  # The root as `nixops4-eval` evaluates it (./nixops4-eval.nix: outputs
  # through its fixpoint, known only from what the providers returned),
  # `returned` being the outputs of alice's applied resources, by name.
  evaluate =
    settings: returned:
    import ./nixops4-eval.nix {
      resourceProviderSystem = system;
      returned = {
        state = { };
        alice = returned;
      };
    } (evalRoot [ (rootModule settings) ]);
  fromFiles = { inherit panelFile hostingFile; };

  # The graph's shape, and the graph the pure configurator makes once every
  # output is known: what the members' inputs must hold.
  shape = configurator.configureFiles fromFiles;
  names = attrNames shape.resources;
  applications = attrNames shape.urls;
  # What each provider returns: every declared output (null where empty).
  outputs = import ./fake-outputs.nix shape.resources;
  expected = configurator.configure {
    panel = fromJSON (readFile panelFile);
    hosting = import hostingFile { };
    inherit outputs;
    systems = lib.genAttrs applications fakeSystem;
  };

  applied = evaluate fromFiles outputs;
  exported = applied.config._export.members.alice.members;
  component = applied.config.members.alice.fediversity;
  resource = name: exported.${name}.resource;
  allInputs = mapAttrs (name: _: (resource name).inputs) exported;

  # The same with the Mastodon VM not applied yet: its outputs are
  # dependencies, which fail when forced.
  notApplied = "mastodon-vm";
  pending = (evaluate fromFiles (removeAttrs outputs [ notApplied ])).config._export.members.alice.members;

  # Providers that left an output out of their response: under NixOps4
  # each reader fails ("Resource ... does not have output ..."), whatever
  # default the output option has.
  lacking = evaluate fromFiles (
    outputs
    // {
      mastodon-vm = removeAttrs outputs.mastodon-vm [ "sshHostKey" ];
      mastodon-media-bucket = removeAttrs outputs.mastodon-media-bucket [ "websiteUrl" ];
    }
  );
  lackingMembers = lacking.config._export.members.alice.members;

  # Nothing applied yet: NixOps4 starts with the members whose inputs
  # evaluate without any output (work.rs applies each as soon as they do).
  startable =
    settings:
    let
      members = (evaluate settings { }).config._export.members.alice.members;
    in
    filter (name: !(forces members.${name}.resource.inputs)) names;

  # Bad panel values, by field: read by one resource's inputs (size,
  # onDisable) or only by a NixOS system (registrations, transcoding,
  # the admin's e-mail).
  panel = fromJSON (readFile panelFile);
  badPanels = {
    "applications.mastodon.size" = lib.recursiveUpdate panel { applications.mastodon.size = "huge"; };
    "applications.mastodon.registrations" = lib.recursiveUpdate panel {
      applications.mastodon.registrations = "everyone";
    };
    "applications.peertube.onDisable" = lib.recursiveUpdate panel { applications.peertube.onDisable = "delete"; };
    "applications.peertube.transcoding" = lib.recursiveUpdate panel { applications.peertube.transcoding = "yes"; };
    "admin.email" = lib.recursiveUpdate panel { admin.email = "alice"; };
  };
  badPanelStops =
    field:
    let
      settings = {
        panel = badPanels.${field};
        inherit hostingFile;
      };
      alice = (evaluate settings { }).config._export.members.alice;
    in
    forces (attrNames alice.members) && startable settings == [ ];

  # examples/local/hosting.nix, a function of `{ backends }`, as a
  # hostingFile.
  localSettings = {
    inherit panelFile;
    hostingFile = ../../examples/local/hosting.nix;
    hostingArgs.backends = import ./fake-backends.nix;
  };

  # What NixOps4's `renderProviderDocs` reads of a provider module
  # (nix/render-provider-docs/package.nix `providerEval`: the module in
  # nix/provider/provider.nix, with `resourceProviderSystem` failing).
  providerDoc =
    name:
    if nixops4 == null then
      applied.config.members.alice.providers.${name}
    else
      (lib.evalModules {
        modules = [
          (nixops4 + "/nix/provider/provider.nix")
          { options._module.args = lib.mkOption { internal = true; }; }
          providerModules.${name}
        ];
        specialArgs.resourceProviderSystem = throw "glue test: the provider docs need resourceProviderSystem";
      }).config;
  isStr =
    v:
    let
      r = tryEval (isString v);
    in
    r.success && r.value;
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
    "the outputs the providers return (fake-outputs.nix) are exactly their declared outputs" = all (
      name: attrNames (resource name).outputsSkeleton == attrNames outputs.${name}
    ) names;
    "no input or service reads an output its provider did not return" =
      !(forces allInputs) && !(forces component.services);
    "an output left out of a provider's response fails its readers, as under NixOps4" =
      forces lackingMembers.mastodon-deployment.resource.inputs.hostPublicKey
      && forces lacking.config.members.alice.fediversity.services.mastodon.s3.buckets.media.publicUrl
      && !(forces lackingMembers.mastodon-deployment.resource.inputs.host)
      && !(forces lackingMembers.mastodon-dns-a.resource.inputs);
    "with nothing applied, the members NixOps4 starts with are the graph's ready ones" =
      startable fromFiles == shape.ready && shape.ready != [ ];
    "a bad panel fails the member set and every member's inputs before anything is applied (${concatStringsSep ", " (attrNames badPanels)})" =
      all badPanelStops (attrNames badPanels);
    "examples/local/hosting.nix works as hostingFile with hostingArgs.backends" =
      attrNames (evaluate localSettings { }).config._export.members.alice.members
      == attrNames (configurator.configureFiles localSettings).resources;
    "each provider module has what renderProviderDocs reads (name, description, sourceBaseUrl, sourceName)" =
      all (
        name:
        all (option: isStr (providerDoc name).${option}) [
          "name"
          "description"
          "sourceBaseUrl"
          "sourceName"
        ]
      ) providerNames;
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
# An output read that its provider did not return: NixOps4's error first
# (the pure configurator's `expected` would fail on it too, less clearly).
if checks."no input or service reads an output its provider did not return" == false then
  deepSeq [
    allInputs
    component.services
  ] (throw "glue test (against the ${against}): an input or service reads an output its provider did not return")
else if failed != [ ] then
  throw "glue test (against the ${against}): failed: ${concatStringsSep "; " failed}"
else
  {
    inherit against;
    passed = attrNames checks;
  }
