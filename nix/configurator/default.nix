# The Fediversity cluster configurator, pure Nix (no nixpkgs; Nix 2.8).
# See README.md in this directory.
let
  panel = import ./panel.nix;
  hosting = import ./hosting.nix;
  mapping = import ./mapping.nix;
in
rec {
  inherit (panel) readPanel checkPanel;
  inherit (hosting) checkHosting importHosting;
  applications = import ./applications.nix;

  # The resource graph from a panel and a hosting configuration, both as
  # plain values (checked here; the sources name them in the errors), plus
  # the outputs known so far and the built NixOS systems.
  configure =
    {
      panel,
      hosting,
      outputs ? { },
      systems ? { },
      panelSource ? "(given as a value)",
      hostingSource ? "(given as a value)",
    }:
    mapping {
      panel = checkPanel panelSource panel;
      hosting = checkHosting hostingSource hosting;
      inherit outputs systems;
    };

  # The same from files: the panel's JSON, the hosting configuration's Nix
  # file (an attribute set, or a function, called with `hostingArgs`), and
  # optionally JSON files of the known outputs and the built systems.
  configureFiles =
    {
      panelFile,
      hostingFile,
      hostingArgs ? { },
      outputsFile ? null,
      systemsFile ? null,
    }:
    let
      readJson = f: if f == null then { } else builtins.fromJSON (builtins.readFile f);
    in
    mapping {
      panel = readPanel panelFile;
      hosting = checkHosting "(${toString hostingFile})" (importHosting hostingFile hostingArgs);
      outputs = readJson outputsFile;
      systems = readJson systemsFile;
    };

  # Refuses operators of one hosting provider whose resources would share a
  # name on a backend (a VM name, a bucket, a Garage key, a file on the
  # deploying machine, a DNS record): each provider would take the other's
  # object for its own. `operators` is, by operator name, what `configure`
  # takes (`panel`, `hosting`, `panelSource`, `hostingSource`) or what
  # `configureFiles` takes (`panelFile`, `hostingFile`, `hostingArgs`).
  # Returns the operators' backend names, or fails naming both operators.
  checkOperators =
    operators:
    let
      inherit (builtins)
        attrNames
        concatLists
        filter
        head
        map
        ;
      graphOf =
        o:
        if o ? panelFile then
          configureFiles (
            {
              inherit (o) panelFile hostingFile;
            }
            // (if o ? hostingArgs then { inherit (o) hostingArgs; } else { })
          )
        else
          configure (removeAttrs o [ "hostingArgs" ]);
      sourceOf = o: if o ? panelFile then "panel ${toString o.panelFile}" else o.panelSource or "panel given as a value";
      entries = concatLists (
        map (
          op:
          map (e: e // { operator = op; }) (graphOf operators.${op}).backendNames
        ) (attrNames operators)
      );
      clashes = concatLists (
        map (
          a:
          map (b: { inherit a b; }) (
            filter (b: b.operator > a.operator && b.backend == a.backend && b.name == a.name) entries
          )
        ) entries
      );
      c = head clashes;
      describe = e: "operator \"${e.operator}\" (${sourceOf operators.${e.operator}}, resource \"${e.resource}\")";
    in
    if clashes == [ ] then
      builtins.listToAttrs (
        map (op: {
          name = op;
          value = (graphOf operators.${op}).backendNames;
        }) (attrNames operators)
      )
    else
      throw "fediversity configurator: ${describe c.a} and ${describe c.b} would both use the ${c.a.backend} \"${c.a.name}\", and each would take the other's for its own. Fix: give one of them another domain in its panel (or, for a file, other deployer directories in its hosting configuration).";
}
