# Generated from `fedi-garage-bucket --schema` by `fedi-resource-runner generate`.
# Do not edit: change the provider's Rust types and regenerate.
{ package }:
{ lib, resourceProviderSystem, ... }:
let
  inherit (lib) mkOption types;
in
{
  name = "garage-bucket";
  description = ''
    Buckets and access keys on a Garage cluster (admin API v2): buckets with quotas, website access, CORS and a keep-or-purge choice for their data; access keys with exact permissions, their secrets kept in files on the deploying machine.
  '';
  sourceBaseUrl = "https://example.invalid/fediversity/nixops4-providers";
  sourceName = "fediversity-providers";
  executable = "${package resourceProviderSystem}/bin/fedi-garage-bucket";
  resourceTypes = {
    bucket = {
      description = ''
        A Garage bucket: global alias, quotas, website access, CORS rules, and whether deleting it keeps or purges its data. It carries a record of its owner; an existing bucket with the same alias is adopted only when it carries this resource's record (a retry after a crash) or with `takeOver = true`, never silently.

        Supports, beyond NixOps4 v0: delete (`xDeleteResourceRequest`), read (`xReadResourceRequest`).
      '';
      requireState = true;
      inputs = {
        options = {
          corsRules = mkOption {
            type = types.nullOr (types.listOf (types.submodule {
              options = {
                allowedHeaders = mkOption {
                  type = types.listOf (types.str);
                  default = [ ];
                  description = ''
                    Request headers allowed (`*` for any).
                  '';
                };
                allowedMethods = mkOption {
                  type = types.listOf (types.str);
                  description = ''
                    HTTP methods allowed: `GET`, `PUT`, `POST`, `DELETE`, `HEAD`.
                  '';
                };
                allowedOrigins = mkOption {
                  type = types.listOf (types.str);
                  description = ''
                    Origins allowed, e.g. `["https://video.example.org"]` or `["*"]`.
                  '';
                };
                exposeHeaders = mkOption {
                  type = types.listOf (types.str);
                  default = [ ];
                  description = ''
                    Response headers the browser may read.
                  '';
                };
                maxAgeSeconds = mkOption {
                  type = types.nullOr (types.ints.unsigned);
                  default = null;
                  description = ''
                    How long browsers may cache the preflight answer, in seconds.
                  '';
                };
              };
            }));
            default = null;
            description = ''
              CORS rules, for browsers fetching objects from other origins (e.g.
              PeerTube's player). Empty: no CORS.
            '';
          };
          garage = mkOption {
            type = types.submodule {
              options = {
                adminEndpoint = mkOption {
                  type = types.str;
                  description = ''
                    URL of the admin API (`[admin] api_bind_addr` in garage.toml), e.g.
                    `https://garage-admin.example.org` or `http://[::1]:3903`. HTTPS
                    certificates are verified against the system's trusted roots;
                    `http://` is refused unless the host is a loopback address (the
                    admin token would travel in clear).
                  '';
                };
                adminToken = mkOption {
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
                    The admin API token (`admin_token` in garage.toml, or a token made
                    with `garage admin-token create`), read from a file or an
                    environment variable.
                  '';
                };
                keyIdSecret = mkOption {
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
                    The hosting provider's secret from which access key ids are derived
                    (HMAC-SHA256 of the resource's `owner` and `name`), so that nobody
                    without it can predict or plant the id of a key this provider will
                    make or adopt: a file or environment variable holding at least 16
                    random bytes, the same for every deployment that manages these
                    keys. Unset: the admin token is used (then rotating the token
                    changes the ids of keys made after it; existing keys keep theirs).
                  '';
                };
                region = mkOption {
                  type = types.str;
                  default = "garage";
                  description = ''
                    S3 region (`[s3_api] s3_region`).
                  '';
                };
                s3Endpoint = mkOption {
                  type = types.str;
                  description = ''
                    URL of the S3 API (`[s3_api] api_bind_addr`), e.g.
                    `https://s3.example.org`. Used for outputs, `onDelete = "purge"` and
                    `verify`.
                  '';
                };
                s3TimeoutSeconds = mkOption {
                  type = types.ints.unsigned;
                  default = 30;
                  description = ''
                    How long one S3 request may take to connect and between reads, in
                    seconds (purge and `verify` use S3); its retries together take at
                    most three times as long.
                  '';
                };
                webEndpoint = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    Base URL of the `[s3_web]` endpoint, with its `root_domain` as the
                    host, e.g. `https://web.example.org`: a website bucket `b` is then
                    served at `https://b.web.example.org/`. Without it, no website URL
                    is output.
                  '';
                };
              };
            };
            description = ''
              How to reach Garage.
            '';
          };
          maxObjects = mkOption {
            type = types.nullOr (types.ints.unsigned);
            default = null;
            description = ''
              Object count limit; unset means unlimited.
            '';
          };
          maxSize = mkOption {
            type = types.nullOr (types.ints.unsigned);
            default = null;
            description = ''
              Size limit in bytes; unset means unlimited.
            '';
          };
          name = mkOption {
            type = types.str;
            description = ''
              The bucket's global alias: the name S3 clients use. 3 to 63
              characters: lowercase letters, digits, `-` and `.`. Changing it
              renames the bucket (the data stays).
            '';
          };
          onDelete = mkOption {
            type = types.enum [ "keep" "purge" ];
            default = "keep";
            description = ''
              What deleting the resource does with the bucket's data: `keep`
              refuses to delete a bucket that still holds objects (the data stays,
              and the error says so); `purge` deletes every object and unfinished
              upload, then the bucket.
            '';
          };
          owner = mkOption {
            type = types.str;
            default = "";
            description = ''
              Whose bucket this is, e.g. `fediversity:alice-fedi-test`: recorded
              on the bucket (an ownership key named after it), and shown when
              another resource finds the bucket. Deployments sharing a Garage need
              distinct owners. Changing it moves the record.
            '';
          };
          takeOver = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Manage a bucket of this name that exists without this resource's
              ownership record (made by hand, by another tool, or by another
              owner): create then adopts it, records this resource as its owner
              (removing other owners' records) and applies the declared settings;
              update and delete act on it even if another owner took it over
              since. Set it for one apply, deliberately.
            '';
          };
          website = mkOption {
            type = types.nullOr (types.submodule {
              options = {
                errorDocument = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    The object served when a key is not found.
                  '';
                };
                indexDocument = mkOption {
                  type = types.str;
                  default = "index.html";
                  description = ''
                    The object served for a directory (a key ending in `/`).
                  '';
                };
              };
            });
            default = null;
            description = ''
              Serve the bucket's objects publicly through Garage's `[s3_web]`
              endpoint. Unset: no website access.
            '';
          };
        };
      };
      outputs = {
        options = {
          bucketId = mkOption {
            type = types.str;
            description = ''
              Garage's id of the bucket.
            '';
          };
          name = mkOption {
            type = types.str;
            description = ''
              The global alias (S3 bucket name).
            '';
          };
          region = mkOption {
            type = types.str;
            description = ''
              The S3 region.
            '';
          };
          s3Endpoint = mkOption {
            type = types.str;
            description = ''
              The S3 endpoint to configure applications with.
            '';
          };
          websiteUrl = mkOption {
            type = types.nullOr (types.str);
            default = null;
            description = ''
              The public URL of the website, when website access is on and
              `garage.webEndpoint` is set.
            '';
          };
        };
      };
    };
    key = {
      description = ''
        A Garage access key with exact permissions on buckets and the bucket-creation right. Its secret is written to a file (mode 0600) on the deploying machine, never output; a missing file is fetched again from Garage. Its id is derived from `owner` and `name` with the hosting provider's secret; a key found there under another name is not adopted without `takeOver = true`.

        Supports, beyond NixOps4 v0: delete (`xDeleteResourceRequest`), read (`xReadResourceRequest`).
      '';
      requireState = true;
      inputs = {
        options = {
          allowCreateBucket = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Whether the key may create buckets.
            '';
          };
          garage = mkOption {
            type = types.submodule {
              options = {
                adminEndpoint = mkOption {
                  type = types.str;
                  description = ''
                    URL of the admin API (`[admin] api_bind_addr` in garage.toml), e.g.
                    `https://garage-admin.example.org` or `http://[::1]:3903`. HTTPS
                    certificates are verified against the system's trusted roots;
                    `http://` is refused unless the host is a loopback address (the
                    admin token would travel in clear).
                  '';
                };
                adminToken = mkOption {
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
                    The admin API token (`admin_token` in garage.toml, or a token made
                    with `garage admin-token create`), read from a file or an
                    environment variable.
                  '';
                };
                keyIdSecret = mkOption {
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
                    The hosting provider's secret from which access key ids are derived
                    (HMAC-SHA256 of the resource's `owner` and `name`), so that nobody
                    without it can predict or plant the id of a key this provider will
                    make or adopt: a file or environment variable holding at least 16
                    random bytes, the same for every deployment that manages these
                    keys. Unset: the admin token is used (then rotating the token
                    changes the ids of keys made after it; existing keys keep theirs).
                  '';
                };
                region = mkOption {
                  type = types.str;
                  default = "garage";
                  description = ''
                    S3 region (`[s3_api] s3_region`).
                  '';
                };
                s3Endpoint = mkOption {
                  type = types.str;
                  description = ''
                    URL of the S3 API (`[s3_api] api_bind_addr`), e.g.
                    `https://s3.example.org`. Used for outputs, `onDelete = "purge"` and
                    `verify`.
                  '';
                };
                s3TimeoutSeconds = mkOption {
                  type = types.ints.unsigned;
                  default = 30;
                  description = ''
                    How long one S3 request may take to connect and between reads, in
                    seconds (purge and `verify` use S3); its retries together take at
                    most three times as long.
                  '';
                };
                webEndpoint = mkOption {
                  type = types.nullOr (types.str);
                  default = null;
                  description = ''
                    Base URL of the `[s3_web]` endpoint, with its `root_domain` as the
                    host, e.g. `https://web.example.org`: a website bucket `b` is then
                    served at `https://b.web.example.org/`. Without it, no website URL
                    is output.
                  '';
                };
              };
            };
            description = ''
              How to reach Garage.
            '';
          };
          name = mkOption {
            type = types.str;
            description = ''
              The key's name in Garage. The access key id is derived from it and
              `owner` with the hosting provider's secret (so that a retried create
              finds the key); changing the name later only renames the key.
            '';
          };
          owner = mkOption {
            type = types.str;
            default = "";
            description = ''
              Whose key this is, e.g. `fediversity:alice-fedi-test`; part of the
              access key id's derivation. Deployments sharing a Garage need
              distinct owners.
            '';
          };
          permissions = mkOption {
            type = types.nullOr (types.listOf (types.submodule {
              options = {
                bucket = mkOption {
                  type = types.str;
                  description = ''
                    The bucket: its id (a `bucket` resource's `bucketId` output, which
                    saves a lookup) or its global alias (its `name` output).
                  '';
                };
                owner = mkOption {
                  type = types.bool;
                  default = false;
                  description = ''
                    May change the bucket's settings (website, CORS) through S3.
                  '';
                };
                read = mkOption {
                  type = types.bool;
                  default = false;
                  description = ''
                    May read objects.
                  '';
                };
                write = mkOption {
                  type = types.bool;
                  default = false;
                  description = ''
                    May write and delete objects.
                  '';
                };
              };
            }));
            default = null;
            description = ''
              The key's permissions, exactly: permissions on buckets not listed
              here, and flags not set, are removed.
            '';
          };
          secretKeyPath = mkOption {
            type = types.str;
            description = ''
              Where the secret access key is written on the deploying machine
              (mode 0600, atomically; missing directories are created 0700). Hand
              it to services as a key file (e.g. `nixos-config` secrets), never
              through the Nix store.
            '';
          };
          takeOver = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Manage a key that is not provably this resource's: on create, the
              key at this resource's id under another name (it is then renamed and
              its permissions made exact); on update and delete, a key whose name
              is no longer the recorded one. Set it for one apply, deliberately.
            '';
          };
          verify = mkOption {
            type = types.bool;
            default = false;
            description = ''
              After each create or update, prove the permissions through the S3
              API: with read and write, put, get and delete a probe object; with
              read only, list the bucket. A wrong permission then fails the
              deployment rather than the service later.
            '';
          };
        };
      };
      outputs = {
        options = {
          accessKeyId = mkOption {
            type = types.str;
            description = ''
              The access key id (`GK...`).
            '';
          };
          name = mkOption {
            type = types.str;
            description = ''
              The key's name.
            '';
          };
          secretKeyPath = mkOption {
            type = types.str;
            description = ''
              Absolute path of the file holding the secret access key.
            '';
          };
        };
      };
    };
  };
}
