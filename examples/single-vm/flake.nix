# One VM, end to end: a deployer key, a VM on Proxmox VE reachable with it,
# the VM's DNS name, and a small NixOS system (nginx serving one page)
# deployed onto it over SSH, the host key its guest agent reported pinned.
# See README.md next to this file.
#
#   nix flake lock --override-input fediversity-providers path:../..
#   nixops4 apply
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    nixops4.url = "github:nixops4/nixops4";
    fediversity-providers.url = "path:../..";
  };

  outputs =
    inputs@{ flake-parts, nixpkgs, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      imports = [ inputs.nixops4.modules.flake.default ];
      systems = [ "x86_64-linux" ];
      nixops4 =
        { providers, members, ... }:
        let
          web = members.web.members;
          domain = "www.example.org";

          # The hosting provider's cluster and DNS; their secrets stay in
          # files on the deploying machine.
          proxmox = {
            endpoint = "https://pve1.hoster.example:8006";
            tokenId = "deployer@pve!fediversity";
            tokenSecret.file = "/run/secrets/proxmox-token";
            caFile = "/etc/fediversity/pve-root-ca.pem";
          };
          dns = {
            server.address = "192.0.2.53";
            zone = "example.org";
            tsig = {
              keyName = "deploy";
              secret.file = "/run/secrets/tsig-deploy";
            };
            owner = "single-vm-example";
          };

          # The VM's NixOS system. Its layout is that of nixpkgs' Proxmox
          # image, the template the VM is cloned from (build the template
          # from the same module: `config.system.build.VMA`).
          nixos = nixpkgs.lib.nixosSystem {
            modules = [
              (
                { modulesPath, pkgs, ... }:
                {
                  imports = [ "${modulesPath}/virtualisation/proxmox-image.nix" ];
                  nixpkgs.hostPlatform = "x86_64-linux";
                  # The deployer keeps its access after the switch.
                  services.openssh = {
                    enable = true;
                    settings.PasswordAuthentication = false;
                  };
                  users.users.root.openssh.authorizedKeys.keys = [ web.deployer-key.outputs.publicKey ];
                  services.qemuGuest.enable = true;

                  services.nginx = {
                    enable = true;
                    virtualHosts.${domain} = {
                      enableACME = true;
                      forceSSL = true;
                      root = pkgs.writeTextDir "index.html" "<h1>Hello from ${domain}</h1>\n";
                    };
                  };
                  security.acme = {
                    acceptTerms = true;
                    defaults.email = "hostmaster@example.org";
                  };
                  networking.firewall.allowedTCPPorts = [
                    80
                    443
                  ];
                  system.stateVersion = "25.05";
                }
              )
            ];
          };
        in
        {
          providers.local = inputs.nixops4.modules.nixops4Provider.local;
          providers.ssh-key = inputs.fediversity-providers.modules.nixops4Provider.ssh-key;
          providers.proxmox-vm = inputs.fediversity-providers.modules.nixops4Provider.proxmox-vm;
          providers.dns-record = inputs.fediversity-providers.modules.nixops4Provider.dns-record;
          providers.nixos-config = inputs.fediversity-providers.modules.nixops4Provider.nixos-config;

          members.web = {
            members.state = {
              type = providers.local.state_file;
              inputs.name = "nixops4-state.json";
            };

            # The key the deployment logs in with; generated once, kept.
            members.deployer-key = {
              type = providers.ssh-key.keypair;
              state = web.state;
              inputs = {
                privateKeyPath = "/var/lib/fediversity/keys/web1-deployer";
                comment = "deployer@${domain}";
              };
            };

            members.vm = {
              type = providers.proxmox-vm.vm;
              state = web.state;
              inputs = {
                inherit proxmox;
                node = "pve1";
                template.name = "nixos-cloudinit";
                storage = "local-lvm";
                name = "web1";
                description = "The single-vm example: ${domain}";
                tags = [ "fediversity" ];
                cores = 2;
                memory = 2048;
                # nixpkgs' Proxmox image has its disk on virtio0: grow it.
                disks = [
                  {
                    slot = "virtio0";
                    sizeGib = 20;
                  }
                ];
                networks = [ { bridge = "vmbr0"; } ];
                onBoot = true;
                cloudInit = {
                  user = "root";
                  sshKeys = [ web.deployer-key.outputs.publicKey ];
                  ipConfigs = [ { ipv4 = "dhcp"; } ];
                };
                # Addresses and the SSH host key come from the guest agent.
                waitForAgent = true;
              };
            };

            # The name points at whatever address the VM got.
            members.dns-a = {
              type = providers.dns-record.record;
              state = web.state;
              inputs = dns // {
                name = "www";
                type = "A";
                values = [ (builtins.head web.vm.outputs.ipv4Addresses) ];
                ttl = 300;
              };
            };

            # The system, onto the VM's address, accepting only the host key
            # the guest agent read (no trust on first use).
            members.deployment = {
              type = providers.nixos-config.deployment;
              inputs = {
                # Referring to the toplevel builds it before the deployment runs.
                system = "${nixos.config.system.build.toplevel}";
                host = builtins.head web.vm.outputs.ipv4Addresses;
                hostPublicKey = web.vm.outputs.sshHostKey;
                sshKeyFile = web.deployer-key.outputs.privateKeyPath;
                user = "root";
                goal = "switch";
              };
            };
          };
        };
    };
}
