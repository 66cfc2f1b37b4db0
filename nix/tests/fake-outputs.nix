# Plausible outputs for every resource of a configurator graph, as its
# provider would return them (every output name of the generated provider
# modules), for tests that evaluate the glue without applying anything.
# Builtins only.
#
#   import ./fake-outputs.nix graph.resources
#   => { "mastodon-vm" = { ipv4Addresses = [ "192.0.2.10" ]; ... }; ... }
let
  inherit (builtins) attrNames elemAt genList length listToAttrs mapAttrs;

  # A distinct small number per resource, for addresses and ids.
  numbered = resources: listToAttrs (genList (i: { name = elemAt (attrNames resources) i; value = i + 10; }) (length (attrNames resources)));

  byType = {
    "ssh-key/keypair" = name: n: inputs: {
      algorithm = "ed25519";
      bits = 256;
      fingerprint = "SHA256:fake-${name}";
      privateKey = null;
      privateKeyPath = inputs.privateKeyPath;
      publicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyOf${toString n} ${inputs.comment or ""}";
    };
    "proxmox-vm/vm" = name: n: inputs: {
      ipv4Addresses = [ "192.0.2.${toString n}" ];
      ipv6Addresses = [ "2001:db8::${toString n}" ];
      macAddresses = [ "BC:24:11:00:00:${toString n}" ];
      inherit (inputs) name node;
      pendingChanges = [ ];
      sshHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKey${toString n} root@${inputs.name}";
      vmid = 100 + n;
    };
    "garage-bucket/bucket" = name: n: inputs: {
      bucketId = "fakebucketid${toString n}";
      inherit (inputs) name;
      region = inputs.garage.region or "garage";
      s3Endpoint = inputs.garage.s3Endpoint;
      websiteUrl = if inputs.garage ? webEndpoint then "https://${inputs.name}.web.example/" else null;
    };
    "garage-bucket/key" = name: n: inputs: {
      accessKeyId = "GKfake${toString n}";
      inherit (inputs) name secretKeyPath;
    };
    # (Records and deployments feed no other resource: their outputs here
    # need not follow their inputs, which may still hold placeholders.)
    "dns-record/record" = name: n: inputs: {
      fqdn = "${name}.${inputs.zone}";
      ttl = inputs.ttl or 3600;
      inherit (inputs) type zone;
      values = [ "192.0.2.${toString n}" ];
    };
    "nixos-config/deployment" = name: n: inputs: {
      changed = true;
      generation = 1;
      keys = map (k: "/run/keys/${k.name}") (inputs.keys or [ ]);
      pathsCopied = 1;
      previousSystem = null;
      system = "/nix/store/00000000000000000000000000000000-nixos-system-${name}";
    };
  };
in
resources:
let
  numbers = numbered resources;
in
mapAttrs (
  name: resource:
  byType."${resource.provider}/${resource.type}" name numbers.${name} resource.inputs
) resources
