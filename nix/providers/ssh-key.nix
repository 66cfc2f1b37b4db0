# Generated from `fedi-ssh-key --schema` by `fedi-resource-runner generate`.
# Do not edit: change the provider's Rust types and regenerate.
{ package }:
{ lib, resourceProviderSystem, ... }:
let
  inherit (lib) mkOption types;
in
{
  name = "ssh-key";
  description = ''
    SSH key pairs that persist across deployments: generated once, the private key kept in a file on the deploying machine (never in the Nix store or, by default, the state), the public key and fingerprint as outputs.
  '';
  sourceBaseUrl = "https://example.invalid/fediversity/nixops4-providers";
  sourceName = "fediversity-providers";
  executable = "${package resourceProviderSystem}/bin/fedi-ssh-key";
  resourceTypes = {
    keypair = {
      description = ''
        An SSH key pair, generated once and kept across deployments. The private key is written to a file on the deploying machine (mode 0600, atomically); the public key and its fingerprint are outputs. A new key is generated only when the algorithm, its size or `rotationTrigger` changes.

        Supports, beyond NixOps4 v0: delete (`xDeleteResourceRequest`), read (`xReadResourceRequest`).
      '';
      requireState = true;
      inputs = {
        options = {
          algorithm = mkOption {
            type = types.enum [ "ed25519" "rsa" "ecdsa" ];
            default = "ed25519";
            description = ''
              Key algorithm. Changing it generates a new key.
            '';
          };
          comment = mkOption {
            type = types.str;
            default = "";
            description = ''
              Comment stored with the key and appended to the public key line; no
              control characters (a line break would add a second key to every
              `authorized_keys` the public key goes into). Changing it keeps the
              key.
            '';
          };
          ecdsaCurve = mkOption {
            type = types.nullOr (types.enum [ "P-256" "P-384" ]);
            default = null;
            description = ''
              ECDSA curve, `P-256` (default) or `P-384`; only with
              `algorithm = "ecdsa"`. Changing it generates a new key.
            '';
          };
          exposePrivateKey = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Also return the private key file's contents as the output
              `privateKey`. Off by default: outputs are stored in the NixOps4 state
              in plain text, so turn this on only when the state itself is kept
              secret and the key must reach another machine through it.
            '';
          };
          passphrase = mkOption {
            type = types.nullOr (types.submodule {
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
            });
            default = null;
            description = ''
              Encrypt the private key file with a passphrase read from this secret
              (`{ file = ...; }` or `{ env = ...; }`). Changing it re-encrypts the
              same key.
            '';
          };
          privateKeyPath = mkOption {
            type = types.str;
            description = ''
              Where the private key is written on the deploying machine (OpenSSH
              format, mode 0600; missing directories are created with mode 0700).
              An absolute path without `..`, outside the Nix store, in directories
              no other user can write (a sticky one like /tmp only above the key's
              own directory); the file is never reached through a symbolic link,
              and an existing one is adopted only when it is a regular file of the
              deploying user that no one else can read. Changing it moves the key;
              a file already at the new path is replaced only when it holds this
              resource's key.
            '';
          };
          rotationTrigger = mkOption {
            type = types.anything;
            default = null;
            description = ''
              Any value; when it changes, a new key replaces the old one (like
              Terraform's `keepers`). Leave it unset to keep the key for ever.
            '';
          };
          rsaBits = mkOption {
            type = types.nullOr (types.ints.unsigned);
            default = null;
            description = ''
              RSA modulus size in bits, 3072 (default) or 4096; only with
              `algorithm = "rsa"`. Changing it generates a new key.
            '';
          };
        };
      };
      outputs = {
        options = {
          algorithm = mkOption {
            type = types.enum [ "ed25519" "rsa" "ecdsa" ];
            description = ''
              The key's algorithm.
            '';
          };
          bits = mkOption {
            type = types.ints.unsigned;
            description = ''
              The key's size in bits.
            '';
          };
          fingerprint = mkOption {
            type = types.str;
            description = ''
              SHA256 fingerprint, as `ssh-keygen -l` prints it (`SHA256:...`).
            '';
          };
          privateKey = mkOption {
            type = types.nullOr (types.str);
            default = null;
            description = ''
              The private key file's contents (encrypted when a passphrase is set);
              only with `exposePrivateKey = true`.
            '';
          };
          privateKeyPath = mkOption {
            type = types.str;
            description = ''
              Absolute path of the private key file on the deploying machine.
            '';
          };
          publicKey = mkOption {
            type = types.str;
            description = ''
              The public key as an OpenSSH line (`ssh-ed25519 AAAA... comment`),
              for `authorized_keys` and cloud-init.
            '';
          };
        };
      };
    };
  };
}
