# The cluster configurator's resource graph as NixOps4 members: one member
# per graph resource, `type` from the component's `providers`, `inputs` from
# the graph, `state` where the provider requires it. Outputs of other
# resources are references to those members' `outputs`, which NixOps4
# resolves lazily: the configurator never sees a placeholder, and no
# placeholder reaches a provider.
#
# Exposed as the flake's `lib.fediversityResources`; the component module
# `modules.nixops4Component.fediversity` (./component.nix) is a thin wrapper.
# Builtins only (the module system around it brings nixpkgs' lib).
{
  # The operator's choices: the FediPanel's JSON as a value (`panel`) or as
  # a file (`panelFile`). Exactly one.
  panel ? null,
  panelFile ? null,
  # The hosting provider's configuration (nix/configurator/hosting.nix): a
  # value, or a Nix file holding a set or a function, which is called with
  # `hostingArgs` (e.g. examples/local/hosting.nix needs `backends`).
  hosting ? null,
  hostingFile ? null,
  hostingArgs ? { },
  # The other operators on the same hosting provider, by name: each
  # `{ panel = ...; }` or `{ panelFile = ...; }` (their hosting configuration
  # is this one's). The member set fails, naming both operators, when a
  # resource of this operator would share a backend name (VM, bucket,
  # Garage key, file on the deploying machine, DNS record) with one of
  # theirs.
  peers ? { },
  # The component's `providers` module argument: it must have every provider
  # the graph uses, by the names of this flake's `modules.nixops4Provider`.
  providers,
  # The component's `members` module argument, whose `outputs` feed the
  # inputs of the resources after them.
  members,
  # The state storage resource (e.g. `members.state`, a `state_file`) for
  # the resources whose provider requires state.
  state,
  # { application, service, sshUser } -> store path of the NixOS system to
  # deploy onto that application's VM (nix/nixos/system.nix builds one).
  buildSystem,
}:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    fromJSON
    listToAttrs
    mapAttrs
    readFile
    ;
  configurator = import ../configurator;

  fail = msg: throw "fediversity NixOps4 glue: ${msg}";
  genAttrs = names: f: listToAttrs (map (name: { inherit name; value = f name; }) names);

  exactlyOne =
    what: value: file:
    if (value == null) == (file == null) then
      fail "give exactly one of `${what}` and `${what}File`. Fix: set one of them, not ${if value == null then "neither" else "both"}."
    else
      null;

  panelValue =
    builtins.seq (exactlyOne "panel" panel panelFile) (
      if panel != null then panel else fromJSON (readFile panelFile)
    );
  hostingValue =
    builtins.seq (exactlyOne "hosting" hosting hostingFile) (
      if hosting != null then hosting else configurator.importHosting hostingFile hostingArgs
    );

  # The graph's shape (resource names, providers, types, state needs) comes
  # from the panel and the hosting configuration alone; evaluating it without
  # outputs forces nothing of NixOps4's. It checks the whole panel and
  # hosting configuration first (nix/configurator/mapping.nix), so a bad
  # value fails the member set, and every member's inputs, before NixOps4
  # can apply any member.
  sources = {
    panelSource = if panelFile != null then "(${toString panelFile})" else "(fediversity.panel)";
    hostingSource = if hostingFile != null then "(${toString hostingFile})" else "(fediversity.hosting)";
  };
  shape = configurator.configure (
    sources
    // {
      panel = panelValue;
      hosting = hostingValue;
    }
  );

  # The peers' backend names against this operator's (checkOperators).
  peerCheck =
    peers == { }
    || (configurator.checkOperators (
      {
        "this operator" = sources // {
          panel = panelValue;
          hosting = hostingValue;
        };
      }
      // mapAttrs (
        name: peer:
        {
          hosting = hostingValue;
          inherit (sources) hostingSource;
        }
        // (
          if peer ? panelFile then
            {
              panel = fromJSON (readFile peer.panelFile);
              panelSource = "panel ${toString peer.panelFile}";
            }
          else
            {
              panel = peer.panel or (fail "peer \"${name}\" has neither `panel` nor `panelFile`. Fix: give one.");
              panelSource = "peer ${name}'s panel";
            }
        )
      ) peers
    )) != null;

  typeOf =
    name: resource:
    let
      provider =
        providers.${resource.provider} or (fail "resource \"${name}\" needs the provider \"${resource.provider}\", which this component does not declare (it has: ${concatStringsSep ", " (attrNames providers)}). Fix: providers.${resource.provider} = inputs.fediversity-providers.modules.nixops4Provider.${resource.provider};");
    in
    provider.${resource.type}
      or (fail "provider \"${resource.provider}\" has no resource type \"${resource.type}\" (it has: ${concatStringsSep ", " (filter (n: n != "_type") (attrNames provider))}). Fix: use this flake's provider module for \"${resource.provider}\", at the version of its configurator.");

  # Every output of every resource, by name, as a reference to the member's
  # output. The names come from the provider's declared outputs (what
  # NixOps4 calls the outputs skeleton), so `outputs ? res` and
  # `outputs.res ? out` are answered without forcing any value; a value is
  # forced only when an input that uses it is, and then NixOps4 applies the
  # resource it belongs to first.
  outputs = mapAttrs (
    name: resource:
    genAttrs (attrNames (typeOf name resource).outputsSkeleton) (output: members.${name}.outputs.${output})
  ) shape.resources;

  applications = attrNames shape.urls;
  deploymentOf = app: graph.resources."${app}-deployment";

  # The NixOS system of each application's VM, built from the deployment's
  # `service` (which itself holds references to outputs: the access key id,
  # the deployer's public key, the buckets' public URLs).
  systems = genAttrs applications (
    app:
    buildSystem {
      application = app;
      service = (deploymentOf app).service;
      sshUser = (deploymentOf app).inputs.user;
    }
  );

  graph = configurator.configure (
    sources
    // {
      panel = panelValue;
      hosting = hostingValue;
      inherit outputs systems;
    }
  );

  member =
    name: resource:
    {
      type = typeOf name resource;
      inputs = graph.resources.${name}.inputs;
    }
    # Stateless resources (DNS records, the NixOS deployment) run on every
    # apply, which is how their providers converge drift and re-upload the
    # deployment's keys after a reboot cleared /run/keys.
    // (if resource.state == "required" then { inherit state; } else { });
in
{
  # The configurator's graph with outputs referenced, not placeholders:
  # `urls`, `seams` (admin password file, e-mail), `resources`.
  inherit graph;
  # The members to declare: `members = (fediversityResources { ... }).members;`
  members = builtins.seq peerCheck (mapAttrs member shape.resources);
  # What each application's NixOS system is built from, by application.
  services = genAttrs applications (app: (deploymentOf app).service);
}
