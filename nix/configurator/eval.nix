# Command-line entry point:
#
#   nix-instantiate --eval --strict --json nix/configurator/eval.nix \
#     --argstr panelFile "$PWD/examples/fediversity/panel.json" \
#     --argstr hostingFile "$PWD/examples/fediversity/hosting.nix" \
#     [--argstr outputsFile outputs.json] [--argstr systemsFile systems.json]
#
# Paths must be absolute. Prints the resource graph as JSON.
{
  panelFile,
  hostingFile,
  outputsFile ? "",
  systemsFile ? "",
}:
(import ./default.nix).configureFiles {
  inherit panelFile hostingFile;
  outputsFile = if outputsFile == "" then null else outputsFile;
  systemsFile = if systemsFile == "" then null else systemsFile;
}
