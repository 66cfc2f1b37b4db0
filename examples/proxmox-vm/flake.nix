# An operator's Mastodon VM on the hosting provider's Proxmox VE, cloned from
# a cloud-init template, reachable with the deployer key made by `ssh-key`,
# its SSH host key read through the QEMU guest agent (for known_hosts).
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
    inputs@{ flake-parts, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      imports = [ inputs.nixops4.modules.flake.default ];
      systems = [ "x86_64-linux" ];
      nixops4 =
        { providers, members, ... }:
        let
          # The hosting provider's cluster; the token secret stays in a file.
          proxmox = {
            endpoint = "https://pve1.hoster.example:8006";
            tokenId = "deployer@pve!fediversity";
            tokenSecret.file = "/run/secrets/proxmox-token";
            # Proxmox's self-signed certificate, pinned (`pvenode cert info`).
            fingerprint = "80:D4:F2:DF:64:95:CD:8D:A0:82:82:AC:48:BA:C0:7A:1B:6B:87:8B:FE:B9:83:1C:95:4E:79:58:77:99:69:F5";
          };
          deployment = members.example.members;
        in
        {
          providers.local = inputs.nixops4.modules.nixops4Provider.local;
          providers.ssh-key = inputs.fediversity-providers.modules.nixops4Provider.ssh-key;
          providers.proxmox = inputs.fediversity-providers.modules.nixops4Provider.proxmox-vm;

          members.example = {
            members.state = {
              type = providers.local.state_file;
              inputs.name = "nixops4-state.json";
            };

            members.deployer-key = {
              type = providers.ssh-key.keypair;
              state = deployment.state;
              inputs.privateKeyPath = "/var/lib/fediversity/keys/deployer";
            };

            members.mastodon-vm = {
              type = providers.proxmox.vm;
              state = deployment.state;
              inputs = {
                inherit proxmox;
                node = "pve1";
                template.name = "debian-12-cloudinit";
                storage = "local-lvm";
                pool = "operators";
                name = "mastodon-alice";
                description = "Mastodon for alice.example";
                tags = [
                  "fediversity"
                  "mastodon"
                ];
                cores = 4;
                memory = 8192;
                disks = [
                  {
                    slot = "scsi0";
                    sizeGib = 64;
                  }
                ];
                networks = [
                  {
                    bridge = "vmbr0";
                    vlan = 42;
                  }
                ];
                onBoot = true;
                cloudInit = {
                  user = "deployer";
                  sshKeys = [ deployment.deployer-key.outputs.publicKey ];
                  ipConfigs = [
                    {
                      ipv4 = "192.0.2.10/24";
                      gateway4 = "192.0.2.1";
                      ipv6 = "auto";
                    }
                  ];
                  nameservers = [ "192.0.2.53" ];
                };
                timeouts.agentSeconds = 600;
              };
            };

            # The VM's host key, pinned for the next step (nixos-config).
            members."known_hosts" = {
              type = providers.local.file;
              inputs.name = "known_hosts";
              inputs.contents =
                builtins.head deployment.mastodon-vm.outputs.ipv4Addresses
                + " "
                + deployment.mastodon-vm.outputs.sshHostKey
                + "\n";
            };
          };
        };
    };
}
