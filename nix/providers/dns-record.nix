# Generated from `fedi-dns-record --schema` by `fedi-resource-runner generate`.
# Do not edit: change the provider's Rust types and regenerate.
{ package }:
{ lib, resourceProviderSystem, ... }:
let
  inherit (lib) mkOption types;
in
{
  name = "dns-record";
  description = ''
    DNS records on the hosting provider's authoritative DNS server, written by RFC 2136 dynamic updates signed with TSIG (BIND, Knot DNS, PowerDNS and others accept them): each change one atomic update, confirmed by querying the server, never clobbering records it did not write.
  '';
  sourceBaseUrl = "https://example.invalid/fediversity/nixops4-providers";
  sourceName = "fediversity-providers";
  executable = "${package resourceProviderSystem}/bin/fedi-dns-record";
  resourceTypes = {
    record = {
      description = ''
        One DNS record set (a name and a type, its values and TTL) in a zone on its primary server, written by RFC 2136 dynamic updates signed with TSIG. Each change is one atomic update (the old records are removed in the same message that adds the new ones, also when the TTL, name or type changes), confirmed by querying the server afterwards. Records this resource did not write are never replaced without `takeOver`. Works with or without state.

        Supports, beyond NixOps4 v0: delete (`xDeleteResourceRequest`), read (`xReadResourceRequest`).
      '';
      requireState = false;
      inputs = {
        options = {
          name = mkOption {
            type = types.str;
            description = ''
              The record's name: relative to the zone (`social`, `_matrix._tcp`,
              `*.apps`; `@` or `""` for the zone itself), or fully qualified with
              a trailing dot (`social.example.org.`). Changing it moves the record
              in one update (with state; without state the old name is not
              known).
            '';
          };
          owner = mkOption {
            type = types.str;
            default = "default";
            description = ''
              Who owns the records, in the ownership record: letters, digits and
              `.-_:`. Give each deployment that shares a zone its own owner.
            '';
          };
          ownershipRecord = mkOption {
            type = types.bool;
            default = true;
            description = ''
              Keep an ownership record, a TXT record next to the name
              (`_fedi-owner-www.example.org` for `www.example.org`), that marks the
              RRset as written by `owner`; it lets a stateless resource
              change its own records while refusing to clobber others'. Turn it
              off for a server whose update policy allows only the record itself;
              then changing the values of an existing RRset needs state or
              `takeOver`.
            '';
          };
          server = mkOption {
            type = types.submodule {
              options = {
                address = mkOption {
                  type = types.str;
                  description = ''
                    Its IP address, IPv4 or IPv6 (a host name is not resolved).
                  '';
                };
                port = mkOption {
                  type = types.ints.unsigned;
                  default = 53;
                  description = ''
                    Its DNS port.
                  '';
                };
              };
            };
            description = ''
              The zone's primary server: the authoritative server that accepts
              dynamic updates (RFC 2136) for the zone.
            '';
          };
          takeOver = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Replace an RRset of this name and type that exists with other values
              and was not written by this resource (nor by its `owner`). Off by
              default: such an RRset is refused, with what it holds.
            '';
          };
          timeoutSeconds = mkOption {
            type = types.ints.unsigned;
            default = 5;
            description = ''
              How long to wait for each answer from the server, in seconds.
            '';
          };
          transport = mkOption {
            type = types.enum [ "udp" "tcp" ];
            default = "udp";
            description = ''
              `udp` (TCP for messages over 512 bytes and truncated answers) or
              `tcp`.
            '';
          };
          tsig = mkOption {
            type = types.nullOr (types.submodule {
              options = {
                algorithm = mkOption {
                  type = types.enum [ "hmac-sha256" "hmac-sha384" "hmac-sha512" ];
                  default = "hmac-sha256";
                  description = ''
                    The key's algorithm.
                  '';
                };
                keyName = mkOption {
                  type = types.str;
                  description = ''
                    The key's name, exactly as in the server's configuration (BIND: `key
                    "NAME"`; Knot: `key: - id: NAME`).
                  '';
                };
                secret = mkOption {
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
                    The key's secret, base64 (`{ file = ...; }` or `{ env = ...; }`). A
                    file written by `tsig-keygen` or `keymgr -t` works as it is.
                  '';
                };
              };
            });
            default = null;
            description = ''
              The TSIG key that signs the updates; leave it unset only for a server
              that takes unsigned updates from this machine.
            '';
          };
          ttl = mkOption {
            type = types.ints.unsigned;
            default = 3600;
            description = ''
              Time to live, in seconds. Changing it replaces the records in one
              update, without a moment where the name does not resolve.
            '';
          };
          type = mkOption {
            type = types.enum [ "A" "AAAA" "CNAME" "TXT" "MX" "SRV" "CAA" "NS" "PTR" "TLSA" "SSHFP" ];
            description = ''
              The record type. Changing it replaces the record in one update (with
              state).
            '';
          };
          values = mkOption {
            type = types.listOf (types.str);
            description = ''
              The values, at least one, each written as the type requires: A
              `192.0.2.10`; AAAA `2001:db8::10`; CNAME, NS and PTR a fully
              qualified name (`web.example.org.`, the trailing dot optional); TXT
              the text itself, unquoted, of any length; MX `10 mail.example.org.`;
              SRV `10 5 443 social.example.org.`; CAA `0 issue "letsencrypt.org"`
              (quotes optional); TLSA `3 1 1 <hex>`; SSHFP `4 2 <hex>`. All of them
              are checked before anything is sent.
            '';
          };
          zone = mkOption {
            type = types.str;
            description = ''
              The zone, as the server has it, e.g. `example.org`.
            '';
          };
        };
      };
      outputs = {
        options = {
          fqdn = mkOption {
            type = types.str;
            description = ''
              The record's fully qualified name, without the trailing dot, e.g.
              `social.example.org`: a service's domain.
            '';
          };
          ttl = mkOption {
            type = types.ints.unsigned;
            description = ''
              The TTL the server serves, in seconds.
            '';
          };
          type = mkOption {
            type = types.enum [ "A" "AAAA" "CNAME" "TXT" "MX" "SRV" "CAA" "NS" "PTR" "TLSA" "SSHFP" ];
            description = ''
              The record type.
            '';
          };
          values = mkOption {
            type = types.listOf (types.str);
            description = ''
              The values the server serves, in canonical form (names fully
              qualified and lower case, IPv6 addresses compressed), sorted.
            '';
          };
          zone = mkOption {
            type = types.str;
            description = ''
              The zone, without the trailing dot.
            '';
          };
        };
      };
    };
  };
}
