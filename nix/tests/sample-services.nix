# The `service` of each application of the example operator
# (examples/fediversity/panel.json on examples/fediversity/hosting.nix),
# with every output filled in by ./fake-outputs.nix: what the NixOS
# modules in nix/nixos/ get, for checks that evaluate them. Builtins only.
let
  configurator = import ../configurator;
  panel = builtins.fromJSON (builtins.readFile ../../examples/fediversity/panel.json);
  hosting = import ../../examples/fediversity/hosting.nix { };
  shape = configurator.configure { inherit panel hosting; };
  graph = configurator.configure {
    inherit panel hosting;
    outputs = import ./fake-outputs.nix shape.resources;
  };
in
builtins.mapAttrs (app: _: graph.resources."${app}-deployment".service) graph.urls
