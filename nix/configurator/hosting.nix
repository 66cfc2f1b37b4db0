# The hosting provider's runtime configuration: which resources exist and
# how to reach them. Secrets are references (`{ file = ...; }` or
# `{ env = ...; }`), read by the providers when an operation runs.
# `checkHosting source value` checks it and fills in the defaults; see
# examples/fediversity/hosting.nix.
let
  check = import ./check.nix;
  str = description: {
    type = "string";
    inherit description;
  };
  optStr = description: {
    type = "string";
    optional = true;
    inherit description;
  };
  absolute =
    description:
    str description
    // {
      check = v: if builtins.substring 0 1 v != "/" then "must be an absolute path, not \"${v}\"" else null;
    };

  spec = {
    type = "set";
    fields = {
      proxmox = {
        type = "set";
        description = "the Proxmox VE cluster the VMs run on";
        fields = {
          endpoint = str "URL of the API of any node, e.g. \"https://pve1.hoster.example:8006\"";
          tokenId = str "the API token's id, USER@REALM!TOKENID";
          tokenSecret = check.secretRef "the API token's secret";
          caFile = optStr "a PEM file with the CA certificate(s) to trust";
          fingerprint = optStr "the SHA-256 fingerprint of the node's certificate";
          nodes = {
            type = "list";
            elements = str "a node name";
            description = "the nodes VMs are placed on, in turn";
            check = v: if v == [ ] then "must name at least one node" else null;
          };
          template = {
            type = "set";
            description = "the template VMs are cloned from: { name = ...; } or { vmid = ...; }";
            fields = {
              name = optStr "the template's name";
              vmid = {
                type = "int";
                optional = true;
                description = "the template's VMID";
              };
            };
            check = v: if (v ? name) == (v ? vmid) then "must give exactly one of `name` and `vmid`" else null;
          };
          storage = str "storage for the VMs' disks, e.g. \"local-lvm\"";
          bridge = str "the bridge the VMs' network device joins, e.g. \"vmbr0\"";
          vlan = {
            type = "int";
            optional = true;
            description = "VLAN tag of the VMs' network device";
          };
          pool = optStr "resource pool for the VMs";
          ipv4 = {
            type = "string";
            optional = true;
            default = "dhcp";
            description = "cloud-init IPv4 configuration of the VMs: \"dhcp\" (static addressing needs an address plan, not here yet)";
          };
        };
      };
      garage = {
        type = "set";
        description = "the Garage cluster that holds the buckets";
        fields = {
          adminEndpoint = str "URL of Garage's admin API";
          adminToken = check.secretRef "Garage's admin API token";
          # Optional; without it the providers derive key ids with the admin token.
          keyIdSecret = check.secretRef "the hosting provider's secret the access key ids are derived with (at least 16 random bytes; default: the admin token)" // {
            optional = true;
          };
          s3Endpoint = str "URL of Garage's S3 API";
          webEndpoint = optStr "base URL of Garage's [s3_web] endpoint (public buckets are served under it)";
          region = {
            type = "string";
            optional = true;
            default = "garage";
            description = "the S3 region";
          };
          verifyKeys = {
            type = "bool";
            optional = true;
            default = true;
            description = "prove each access key's permissions through S3 after creating it";
          };
        };
      };
      dns = {
        type = "set";
        description = "the authoritative DNS server of the operators' domains";
        fields = {
          server = {
            type = "set";
            description = "the zone's primary server";
            fields = {
              address = str "its IP address";
              port = {
                type = "int";
                optional = true;
                default = 53;
                description = "its DNS port";
              };
            };
          };
          zone = str "the zone the operators' domains are in, e.g. \"hoster.example\"";
          tsig = {
            type = "set";
            description = "the TSIG key that signs the updates";
            fields = {
              keyName = str "the key's name";
              algorithm = {
                type = "enum";
                values = [ "hmac-sha256" "hmac-sha384" "hmac-sha512" ];
                optional = true;
                default = "hmac-sha256";
                description = "the key's algorithm";
              };
              secret = check.secretRef "the key's secret, base64";
            };
          };
          ttl = {
            type = "int";
            optional = true;
            default = 3600;
            description = "TTL of the records, seconds";
          };
          ipv6 = {
            type = "bool";
            optional = true;
            default = false;
            description = "whether the VMs get IPv6 (SLAAC) and AAAA records";
          };
        };
      };
      deployer = {
        type = "set";
        description = "the deploying machine: where generated secrets live, how to log in to the VMs";
        fields = {
          keyDir = absolute "directory of the SSH private keys (the deployer keys)";
          s3SecretDir = absolute "directory of the S3 secret access key files";
          secretsDir = absolute "directory of other generated secrets (the admin password)";
          sshUser = {
            type = "string";
            optional = true;
            default = "root";
            description = "the user cloud-init creates with the deployer key and the deployment logs in as (not root: through passwordless sudo)";
          };
          checkSignatures = {
            type = "bool";
            optional = true;
            default = true;
            description = "require signatures the VMs trust on copied store paths";
          };
        };
      };
    };
  };
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    functionArgs
    isFunction
    ;
in
{
  checkHosting =
    source: value:
    check.validate {
      source = "fediversity hosting configuration ${source}";
      file = "the hosting configuration";
    } [ ] spec value;

  # A hosting configuration's Nix file: an attribute set, or a function,
  # called with `args` (`{ }` unless given). examples/local/hosting.nix is
  # such a function of `{ backends }`.
  importHosting =
    file: args:
    let
      value = import file;
      formals = functionArgs value;
      missing = filter (n: !formals.${n} && !(args ? ${n})) (attrNames formals);
      source = "fediversity hosting configuration (${toString file})";
    in
    if !isFunction value then
      if args == { } then
        value
      else
        throw "${source}: the file holds an attribute set, which takes no arguments, but arguments were given (${concatStringsSep ", " (attrNames args)}). Fix: drop the hosting arguments (`hostingArgs`), or make the file a function of them."
    else if missing != [ ] then
      throw "${source}: the file is a function that needs the argument${if builtins.length missing > 1 then "s" else ""} ${concatStringsSep ", " missing}, which ${if builtins.length missing > 1 then "were" else "was"} not given. Fix: pass ${if builtins.length missing > 1 then "them" else "it"} as hosting arguments (`fediversity.hostingArgs.${builtins.head missing} = ...;` in the component, `hostingArgs` of `configureFiles`, `--arg hostingArgs '{ ${builtins.head missing} = ...; }'` to eval.nix), or use a file that applies it, e.g. `import ${toString file} { ${builtins.head missing} = ...; }`."
    else
      value args;
}
