{
  description = "NixOps4 resource providers for the Fediversity hosting stack";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Provider name (nix/providers/<name>.nix) -> Cargo package and binary.
      providers = {
        ssh-key = "fedi-ssh-key";
        garage-bucket = "fedi-garage-bucket";
        proxmox-vm = "fedi-proxmox-vm";
        dns-record = "fedi-dns-record";
        nixos-config = "fedi-nixos-config";
      };

      workspace =
        pkgs: args:
        pkgs.rustPlatform.buildRustPackage (
          {
            version = (lib.importTOML ./Cargo.toml).workspace.package.version;
            src = lib.cleanSource ./.;
            cargoLock.lockFile = ./Cargo.lock;
            # Some tests start real backends that a build sandbox lacks;
            # `checks` runs the suite, `tests/run.sh` installs and starts them.
            doCheck = false;
          }
          // args
        );
    in
    {
      packages = forAllSystems (
        pkgs:
        lib.mapAttrs (
          name: crate:
          workspace pkgs {
            pname = crate;
            cargoBuildFlags = [
              "-p"
              crate
            ];
            nativeCheckInputs = [ pkgs.openssh ];
          }
        ) providers
        // {
          fedi-resource-runner = workspace pkgs {
            pname = "fedi-resource-runner";
            cargoBuildFlags = [
              "-p"
              "fedi-resource-runner"
            ];
          };
          default = workspace pkgs { pname = "fedi-nixops4-providers"; };
        }
      );

      # NixOps4 provider modules, generated from each provider's `--schema`:
      #   providers.ssh-key = inputs.<this flake>.modules.nixops4Provider.ssh-key;
      modules.nixops4Provider = lib.mapAttrs (
        name: _:
        import ./nix/providers/${name}.nix {
          package = system: self.packages.${system}.${name};
        }
      ) providers;

      checks = forAllSystems (
        pkgs:
        {
          workspace-tests = (workspace pkgs { pname = "fedi-nixops4-providers-tests"; }).overrideAttrs {
            doCheck = true;
            # ssh-keygen; knotd, kdig, keymgr and named for the dns-record tests.
            nativeCheckInputs = [
              pkgs.openssh
              pkgs.knot-dns
              pkgs.bind
            ];
          };
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.cargo-nextest
            pkgs.openssh
            pkgs.knot-dns
            pkgs.bind
            pkgs.nix
          ];
        };
      });
    };
}
