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
}
