# A NixOps4 deployment that points a service's name at a VM's address: the
# A and AAAA records of social.example.org follow the VM's address outputs,
# an alias points at that name, and a CAA record names its certificate
# authority.
#
# The records go to the zone's primary server by RFC 2136 dynamic update,
# signed with a TSIG key allowed to update the zone; its secret stays in a
# file outside the Nix store (e.g. written by `tsig-keygen deploy >
# /run/secrets/tsig-deploy`).
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
          example = members.example.members;
          # Where every record goes: the zone, its primary server, the key.
          dns = {
            server.address = "192.0.2.53";
            zone = "example.org";
            tsig = {
              keyName = "deploy";
              secret.file = "/run/secrets/tsig-deploy";
            };
            # One owner per deployment sharing the zone.
            owner = "fediversity-example";
          };
        in
        {
          providers.local = inputs.nixops4.modules.nixops4Provider.local;
          providers.dns-record = inputs.fediversity-providers.modules.nixops4Provider.dns-record;

          members.example = {
            # Records work without state too (each apply checks them and
            # writes what changed; the ownership record tells ours from
            # others'); with state, a renamed record's old name is removed in
            # the same update.
            members.state = {
              type = providers.local.state_file;
              inputs.name = "nixops4-state.json";
            };

            # A placeholder for the VM: a memo whose output carries its
            # addresses. With the proxmox-vm provider (planned) this member
            # becomes the VM, and the records below take its address outputs
            # instead of `outputs.value.*`.
            members.vm = {
              type = providers.local.memo;
              state = example.state;
              inputs.initialize_with = {
                ipv4Address = "192.0.2.10";
                ipv6Address = "2001:db8::10";
              };
            };

            members.social-a = {
              type = providers.dns-record.record;
              state = example.state;
              inputs = dns // {
                name = "social";
                type = "A";
                values = [ example.vm.outputs.value.ipv4Address ];
                ttl = 300;
              };
            };

            members.social-aaaa = {
              type = providers.dns-record.record;
              state = example.state;
              inputs = dns // {
                name = "social";
                type = "AAAA";
                values = [ example.vm.outputs.value.ipv6Address ];
                ttl = 300;
              };
            };

            # The media host is an alias of the service's name, which the
            # A record's output gives.
            members.media-cname = {
              type = providers.dns-record.record;
              state = example.state;
              inputs = dns // {
                name = "media.social";
                type = "CNAME";
                values = [ "${example.social-a.outputs.fqdn}." ];
              };
            };

            # Only Let's Encrypt may issue certificates for the service.
            members.social-caa = {
              type = providers.dns-record.record;
              state = example.state;
              inputs = dns // {
                name = "social";
                type = "CAA";
                values = [ "0 issue letsencrypt.org" ];
              };
            };
          };
        };
    };
}
