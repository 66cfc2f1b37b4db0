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

      # The cluster configurator as a NixOps4 component: an operator's panel
      # and the hosting configuration in, all of its resources out.
      #   members.alice = {
      #     imports = [ inputs.<this flake>.modules.nixops4Component.fediversity ];
      #     fediversity = { panelFile = ./panel.json; hostingFile = ./hosting.nix; state = members.state; };
      #   };
      # See nix/configurator/README.md, "The module-system glue".
      modules.nixops4Component.fediversity = import ./nix/nixops4/component.nix {
        providerModules = self.modules.nixops4Provider;
        inherit nixpkgs;
      };

      lib = {
        # The pure configurator (no nixpkgs): configure, configureFiles,
        # readPanel, checkHosting, ...
        configurator = import ./nix/configurator;
        # The configurator's graph as NixOps4 members, for a component of
        # one's own: { panel | panelFile, hosting | hostingFile, providers,
        # members, state, buildSystem } -> { members, graph, services }.
        fediversityResources = import ./nix/nixops4/resources.nix;
        # The NixOS system of one application's VM from its `service`:
        # { application, service, sshUser ? "root", system ? "x86_64-linux",
        #   modules ? [ ] } -> nixosSystem.
        fediversityNixosSystem =
          {
            system ? "x86_64-linux",
            modules ? [ ],
            ...
          }@args:
          import ./nix/nixos/system.nix { inherit nixpkgs system modules; } (
            removeAttrs args [
              "system"
              "modules"
            ]
          );
      };

      checks = forAllSystems (
        pkgs:
        {
          # The NixOps4 glue for the example operator, in a stand-in of
          # NixOps4's component modules (nix/tests/glue.nix): evaluated when
          # the check is, fails evaluation when a check fails.
          nixops4-glue = pkgs.runCommand "nixops4-glue" {
            result = builtins.toJSON (import ./nix/tests/glue-checks.nix { inherit lib; });
          } ''printf '%s\n' "$result" > $out'';

          # The example operator's three NixOS systems evaluate (option names,
          # assertions): their derivations are instantiated, not built.
          nixos-services-evaluate = pkgs.runCommand "nixos-services-evaluate" {
            systems = builtins.toJSON (
              lib.mapAttrs (
                application: service:
                builtins.unsafeDiscardStringContext
                  (self.lib.fediversityNixosSystem {
                    inherit application service;
                    system = pkgs.stdenv.hostPlatform.system;
                  }).config.system.build.toplevel.drvPath
              ) (import ./nix/tests/sample-services.nix)
            );
          } ''printf '%s\n' "$systems" > $out'';

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
