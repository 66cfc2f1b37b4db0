# Command-line entry point:
#
#   nix-instantiate --eval --strict --json nix/configurator/eval.nix \
#     --argstr panelFile "$PWD/examples/fediversity/panel.json" \
#     --argstr hostingFile "$PWD/examples/fediversity/hosting.nix" \
#     [--argstr outputsFile outputs.json] [--argstr systemsFile systems.json] \
#     [--arg hostingArgs '{ backends = ...; }']
#
# Paths must be absolute. `hostingArgs` is what a hosting file that is a
# function is called with (default `{ }`). Prints the resource graph as JSON.
{
  panelFile,
  hostingFile,
  hostingArgs ? { },
  outputsFile ? "",
  systemsFile ? "",
}:
(import ./default.nix).configureFiles {
  inherit panelFile hostingFile hostingArgs;
  outputsFile = if outputsFile == "" then null else outputsFile;
  systemsFile = if systemsFile == "" then null else systemsFile;
}
