# The Fediversity cluster configurator, pure Nix (no nixpkgs; Nix 2.8).
# See README.md in this directory.
let
  panel = import ./panel.nix;
  hosting = import ./hosting.nix;
  mapping = import ./mapping.nix;
in
rec {
  inherit (panel) readPanel checkPanel;
  inherit (hosting) checkHosting;
  applications = import ./applications.nix;

  # The resource graph from a panel and a hosting configuration, both as
  # plain values (checked here), plus the outputs known so far and the
  # built NixOS systems.
  configure =
    {
      panel,
      hosting,
      outputs ? { },
      systems ? { },
    }:
    mapping {
      panel = checkPanel "(given as a value)" panel;
      hosting = checkHosting "(given as a value)" hosting;
      inherit outputs systems;
    };

  # The same from files: the panel's JSON, the hosting configuration's Nix
  # file (an attribute set, or a function taking `{ }`), and optionally
  # JSON files of the known outputs and the built systems.
  configureFiles =
    {
      panelFile,
      hostingFile,
      outputsFile ? null,
      systemsFile ? null,
    }:
    let
      hostingValue = import hostingFile;
      readJson = f: if f == null then { } else builtins.fromJSON (builtins.readFile f);
    in
    mapping {
      panel = readPanel panelFile;
      hosting = checkHosting "(${toString hostingFile})" (
        if builtins.isFunction hostingValue then hostingValue { } else hostingValue
      );
      outputs = readJson outputsFile;
      systems = readJson systemsFile;
    };
}
