# Generated from `fedi-proxmox-vm --schema` by `fedi-resource-runner generate`.
# Do not edit: change the provider's Rust types and regenerate.
{ package }:
{ lib, resourceProviderSystem, ... }:
let
  inherit (lib) mkOption types;
in
{
  name = "proxmox-vm";
  description = ''
    Virtual machines on Proxmox VE, cloned from templates: CPU, memory, disks, network, cloud-init and tags changed in place, addresses and SSH host key reported by the QEMU guest agent. The API token is read from a file or the environment; TLS is verified against the system roots, a CA file or a pinned certificate fingerprint.
  '';
  sourceBaseUrl = "https://example.invalid/fediversity/nixops4-providers";
  sourceName = "fediversity-providers";
  executable = "${package resourceProviderSystem}/bin/fedi-proxmox-vm";
  resourceTypes = {
    vm = {
      description = ''
        A QEMU virtual machine on Proxmox VE, cloned from a template: CPU, memory, disks (grow only), network devices, cloud-init (user, SSH keys, IP configuration, DNS), tags, start on boot and protection, changed in place (changes that need a restart restart it, or stay pending, as `onPendingChanges` says); its MAC and IP addresses and SSH host key (read through the QEMU guest agent) as outputs. A create retried after a crash or a lost answer adopts the VM the earlier attempt cloned.

        Supports, beyond NixOps4 v0: delete (`xDeleteResourceRequest`), read (`xReadResourceRequest`).
      '';
      requireState = true;
      inputs = {
        options = {
          balloon = mkOption {
            type = types.nullOr (types.ints.unsigned);
            default = null;
            description = ''
              Minimum memory in MiB for ballooning; `0` turns the balloon device
              off. Unset: left as the template has it.
            '';
          };
          cloudInit = mkOption {
            type = types.nullOr (types.submodule {
              options = {
                ipConfigs = mkOption {
                  type = types.nullOr (types.listOf (types.submodule {
                    options = {
                      gateway4 = mkOption {
                        type = types.nullOr (types.str);
                        default = null;
                        description = ''
                          IPv4 gateway (static addresses only).
                        '';
                      };
                      gateway6 = mkOption {
                        type = types.nullOr (types.str);
                        default = null;
                        description = ''
                          IPv6 gateway (static addresses only).
                        '';
                      };
                      ipv4 = mkOption {
                        type = types.nullOr (types.str);
                        default = null;
                        description = ''
                          `dhcp`, or a static address with prefix length, e.g.
                          `192.0.2.10/24`. Unset: no IPv4.
                        '';
                      };
                      ipv6 = mkOption {
                        type = types.nullOr (types.str);
                        default = null;
                        description = ''
                          `dhcp`, `auto` (SLAAC) or a static address with prefix length, e.g.
                          `2001:db8::10/64`. Unset: no IPv6.
                        '';
                      };
                    };
                  }));
                  default = null;
                  description = ''
                    IP configuration of `net0`, `net1`, ... in order.
                  '';
                };
                nameservers = mkOption {
                  type = types.listOf (types.str);
                  default = [ ];
                  description = ''
                    DNS servers. Empty: the node's.
                  '';
                };
                searchDomain = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    DNS search domain. Unset: the node's.
                  '';
                };
                sshKeys = mkOption {
                  type = types.listOf (types.str);
                  default = [ ];
                  description = ''
                    SSH public keys for the user, e.g. an `ssh-key` keypair's
                    `publicKey` output.
                  '';
                };
                user = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    The user cloud-init creates (with the SSH keys). Unset: the image's
                    default user.
                  '';
                };
              };
            });
            default = null;
            description = ''
              Cloud-init settings (the template needs cloud-init in the guest; a
              cloud-init drive is added when missing). Unset: left as they are.
            '';
          };
          cores = mkOption {
            type = types.ints.unsigned;
            default = 1;
            description = ''
              CPU cores per socket.
            '';
          };
          cpu = mkOption {
            type = types.nullOr (types.submodule {
              options = {
                type = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    The emulated CPU type, e.g. `host`, `x86-64-v2-AES`, `kvm64`.
                    Changing it on a running VM needs a restart.
                  '';
                };
              };
            });
            default = null;
            description = ''
              CPU settings. Unset: left as the template has them.
            '';
          };
          description = mkOption {
            type = types.str;
            default = "";
            description = ''
              Notes shown in the Proxmox UI (Markdown).
            '';
          };
          disks = mkOption {
            type = types.nullOr (types.listOf (types.submodule {
              options = {
                sizeGib = mkOption {
                  type = types.ints.unsigned;
                  description = ''
                    Size in GiB.
                  '';
                };
                slot = mkOption {
                  type = types.str;
                  description = ''
                    The disk's slot: `scsi0`, `virtio0`, `sata0`, `ide0`, ...
                  '';
                };
                storage = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    Storage for a disk the template lacks. Unset: `storage`.
                  '';
                };
              };
            }));
            default = null;
            description = ''
              Disk sizes. Disks only grow: a size below the current one is an
              error (Proxmox cannot shrink disks). A slot the template lacks is
              made on `storage`.
            '';
          };
          fullClone = mkOption {
            type = types.bool;
            default = true;
            description = ''
              Make a full clone (independent disks). `false` makes a linked clone,
              which needs a storage with snapshots (LVM-thin, ZFS, Ceph).
            '';
          };
          hostKeyPath = mkOption {
            type = types.str;
            default = "/etc/ssh/ssh_host_ed25519_key.pub";
            description = ''
              The file holding the SSH host public key, read through the guest
              agent.
            '';
          };
          hotplug = mkOption {
            type = types.nullOr (types.listOf (types.str));
            default = null;
            description = ''
              Hotplug features (`network`, `disk`, `cpu`, `memory`, `usb`,
              `cloudinit`); empty turns hotplug off. `memory` needs `numa = true`.
              Unset: left as the template has it (Proxmox's default is `network`,
              `disk`, `usb`).
            '';
          };
          memory = mkOption {
            type = types.ints.unsigned;
            default = 2048;
            description = ''
              Memory in MiB.
            '';
          };
          name = mkOption {
            type = types.str;
            description = ''
              The VM's name, a DNS name such as `mastodon-alice`.
            '';
          };
          networks = mkOption {
            type = types.nullOr (types.listOf (types.submodule {
              options = {
                bridge = mkOption {
                  type = types.str;
                  description = ''
                    The bridge, e.g. `vmbr0`.
                  '';
                };
                firewall = mkOption {
                  type = types.bool;
                  default = false;
                  description = ''
                    Use the Proxmox firewall on this device.
                  '';
                };
                mac = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    MAC address, e.g. `BC:24:11:00:00:01`. Unset: the one Proxmox
                    generated is kept.
                  '';
                };
                model = mkOption {
                  type = types.str;
                  default = "virtio";
                  description = ''
                    The device model: `virtio`, `e1000`, `vmxnet3`, `rtl8139`.
                  '';
                };
                vlan = mkOption {
                  type = types.nullOr (types.ints.unsigned);
                  default = null;
                  description = ''
                    VLAN tag (1 to 4094).
                  '';
                };
              };
            }));
            default = null;
            description = ''
              Network devices `net0`, `net1`, ... in this order. Devices beyond the
              list are removed. Empty: the template's devices are kept as they are.
            '';
          };
          node = mkOption {
            type = types.str;
            description = ''
              The node the VM runs on, e.g. `pve1`. Changing it migrates the VM
              (online when it runs).
            '';
          };
          numa = mkOption {
            type = types.nullOr (types.bool);
            default = null;
            description = ''
              NUMA emulation (needed for memory hotplug). Unset: left as the
              template has it.
            '';
          };
          onBoot = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Start the VM when its node boots.
            '';
          };
          onPendingChanges = mkOption {
            type = types.enum [ "restart" "keep-pending" ];
            default = "restart";
            description = ''
              What to do with changes Proxmox cannot apply to the running VM
              (cores, sockets, CPU type, memory without memory hotplug): they stay
              pending in Proxmox until the VM restarts. `restart`: shut the VM
              down gracefully (stopping it after `timeouts.shutdownSeconds`) and
              start it again, only when such a change is pending. `keep-pending`:
              leave them pending (the `pendingChanges` output and read say so)
              until someone restarts the VM, e.g. in a maintenance window.
            '';
          };
          pool = mkOption {
            type = types.nullOr (types.str);
            default = null;
            description = ''
              Resource pool to put the VM in at creation.
            '';
          };
          protection = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Protection: Proxmox refuses to remove the VM or its disks. Delete
              then fails until it is turned off.
            '';
          };
          proxmox = mkOption {
            type = types.submodule {
              options = {
                caFile = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    A PEM file with the CA certificate(s) to trust instead of the
                    system's roots, e.g. a copy of the cluster's `/etc/pve/pve-root-ca.pem`.
                    Host names are still checked.
                  '';
                };
                endpoint = mkOption {
                  type = types.str;
                  description = ''
                    URL of the API of any node of the cluster, e.g.
                    `https://pve1.hoster.example:8006`.
                  '';
                };
                fingerprint = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    The SHA-256 fingerprint of the node's certificate, as `pvenode cert
                    info` prints it (`AB:CD:...`, colons optional): exactly that
                    certificate is accepted, whoever signed it. Exclusive with `caFile`.
                  '';
                };
                tokenId = mkOption {
                  type = types.str;
                  description = ''
                    The API token's id, `USER@REALM!TOKENID`, e.g.
                    `deployer@pve!fediversity` (made with `pveum user token add`).
                  '';
                };
                tokenSecret = mkOption {
                  type = types.submodule {
                    options = {
                      env = mkOption {
                        type = types.nullOr (types.str);
                        default = null;
                        description = ''
                          Name of an environment variable holding the secret.
                        '';
                      };
                      file = mkOption {
                        type = types.nullOr (types.str);
                        default = null;
                        description = ''
                          Path of a file holding the secret.
                        '';
                      };
                    };
                  };
                  description = ''
                    The API token's secret (the UUID `pveum` shows once), read from a
                    file or an environment variable at operation time.
                  '';
                };
              };
            };
            description = ''
              How to reach the Proxmox VE cluster.
            '';
          };
          sockets = mkOption {
            type = types.ints.unsigned;
            default = 1;
            description = ''
              CPU sockets.
            '';
          };
          started = mkOption {
            type = types.bool;
            default = true;
            description = ''
              Whether the VM runs. `false` shuts it down (then stops it after
              `timeouts.shutdownSeconds`).
            '';
          };
          storage = mkOption {
            type = types.nullOr (types.str);
            default = null;
            description = ''
              Storage for the clone's disks (full clones only), e.g. `local-lvm`;
              also where new disks and a missing cloud-init drive are made. Unset:
              the template's storage. Used at creation.
            '';
          };
          tags = mkOption {
            type = types.listOf (types.str);
            default = [ ];
            description = ''
              Tags. Proxmox lowercases and sorts them; they are compared as a set,
              so their order causes no drift.
            '';
          };
          template = mkOption {
            type = types.submodule {
              options = {
                name = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    The template's name (it must be unique in the cluster).
                  '';
                };
                vmid = mkOption {
                  type = types.nullOr (types.ints.unsigned);
                  default = null;
                  description = ''
                    The template's VMID.
                  '';
                };
              };
            };
            description = ''
              The template to clone. Changing it needs a new VM.
            '';
          };
          timeouts = mkOption {
            type = types.nullOr (types.submodule {
              options = {
                agentSeconds = mkOption {
                  type = types.ints.unsigned;
                  default = 300;
                  description = ''
                    For the guest agent to report addresses and the host key after
                    start.
                  '';
                };
                cloneSeconds = mkOption {
                  type = types.ints.unsigned;
                  default = 900;
                  description = ''
                    For the clone task.
                  '';
                };
                migrateSeconds = mkOption {
                  type = types.ints.unsigned;
                  default = 1800;
                  description = ''
                    For a migration to another node.
                  '';
                };
                shutdownSeconds = mkOption {
                  type = types.ints.unsigned;
                  default = 180;
                  description = ''
                    For a graceful shutdown before the VM is stopped.
                  '';
                };
                taskSeconds = mkOption {
                  type = types.ints.unsigned;
                  default = 300;
                  description = ''
                    For each other task (configure, resize, start, stop, destroy).
                  '';
                };
              };
            });
            default = null;
            description = ''
              How long each phase may take.
            '';
          };
          vmid = mkOption {
            type = types.nullOr (types.ints.unsigned);
            default = null;
            description = ''
              A fixed VMID (100 to 999999999). Unset: the next free one is
              allocated, safely against concurrent creates. Changing it needs a
              new VM.
            '';
          };
          waitForAgent = mkOption {
            type = types.bool;
            default = true;
            description = ''
              Wait for the QEMU guest agent to report the VM's addresses and SSH
              host key. `false`: return once the VM is started; the address and
              host key outputs stay empty.
            '';
          };
        };
      };
      outputs = {
        options = {
          ipv4Addresses = mkOption {
            type = types.listOf (types.str);
            description = ''
              IPv4 addresses the guest agent reports (without loopback).
            '';
          };
          ipv6Addresses = mkOption {
            type = types.listOf (types.str);
            description = ''
              IPv6 addresses the guest agent reports (without loopback and
              link-local).
            '';
          };
          macAddresses = mkOption {
            type = types.listOf (types.str);
            description = ''
              MAC addresses of `net0`, `net1`, ...
            '';
          };
          name = mkOption {
            type = types.str;
            description = ''
              Its name.
            '';
          };
          node = mkOption {
            type = types.str;
            description = ''
              The node it runs on.
            '';
          };
          pendingChanges = mkOption {
            type = types.nullOr (types.listOf (types.str));
            default = null;
            description = ''
              Inputs whose change Proxmox holds pending until the VM restarts
              (with `onPendingChanges = "keep-pending"`), e.g. `["cores",
              "memory"]`; empty when what runs is what the inputs say.
            '';
          };
          sshHostKey = mkOption {
            type = types.nullOr (types.str);
            default = null;
            description = ''
              The guest's SSH host public key, read through the guest agent (a
              channel through the hypervisor, not the network), for pinning in
              `known_hosts`. Unset when not waiting for the agent.
            '';
          };
          vmid = mkOption {
            type = types.ints.unsigned;
            description = ''
              The VM's id.
            '';
          };
        };
      };
    };
  };
}
