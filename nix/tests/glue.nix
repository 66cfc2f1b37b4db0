# Evaluates the NixOps4 glue (nix/nixops4/) for the example operator
# (examples/fediversity/panel.json on examples/fediversity/hosting.nix) and
# checks what NixOps4 would be given. Needs nixpkgs' `lib` (a nixpkgs or a
# nixpkgs.lib checkout), nothing else; builds nothing:
#
#   nix-instantiate --eval --strict --json \
#     -I nixpkgs-lib=<nixpkgs or nixpkgs.lib checkout> nix/tests/glue.nix
#
# By default the component runs in ./nixops4-standin.nix, a stand-in for
# NixOps4's component modules (NOT NixOps4; see there what it leaves out).
# With `-I nixops4=<nixops4 checkout>` it runs in NixOps4's own modules
# (`nix/lib/lib.nix` `evalRoot` and `nix/component/`) instead. Either way
# the root is evaluated as `nixops4-eval` does (./nixops4-eval.nix: outputs
# through its fixpoint, known only if the provider returned them).
#
# Prints `{ "against": "stand-in" | "nixops4", "passed": [ ... ] }`, or fails
# naming the checks that failed. Providers are the generated modules in
# nix/providers/ with fake package paths; NixOS systems are fake store
# paths (nix/nixos/ needs all of nixpkgs: the flake's checks evaluate it).
let
  inherit (builtins) filter head nixPath pathExists;
  searchPath =
    prefix:
    let
      entries = filter (e: e.prefix == prefix) nixPath;
    in
    if entries == [ ] then null else (head entries).path;
  libFrom =
    path:
    if path == null then
      throw "glue test: no nixpkgs lib. Fix: pass -I nixpkgs-lib=<a nixpkgs or nixpkgs.lib checkout>."
    else if pathExists (path + "/lib/default.nix") then
      import (path + "/lib")
    else
      import path;
in
import ./glue-checks.nix {
  lib = libFrom (searchPath "nixpkgs-lib");
  nixops4 = searchPath "nixops4";
}
