# The mapping: (operator config, hosting config, resource outputs) -> the
# resource graph. Pure: no nixpkgs, no builtins newer than Nix 2.8.
#
#   panel    the checked panel (panel.nix)
#   hosting  the checked hosting configuration (hosting.nix)
#   outputs  the outputs known so far, by resource name:
#            { "mastodon-vm" = { ipv4Addresses = [ ... ]; sshHostKey = "..."; }; }
#   systems  the built NixOS systems, by application: { mastodon = "/nix/store/...-nixos-system-..."; }
#
# Where an output is not known yet the input holds a placeholder,
#   { __output = { resource = "mastodon-vm"; output = "ipv4Addresses"; }; }
# (with `element = 0;` when only the first element is used), and where the
# NixOS system is not built yet,
#   { __system = { application = "mastodon"; configuration = "service"; }; }
# A driver applies what is `ready`, feeds the outputs back and evaluates
# again, until nothing is `pending`.
{
  panel,
  hosting,
  outputs ? { },
  systems ? { },
}:
let
  inherit (builtins)
    all
    any
    attrNames
    attrValues
    concatLists
    concatStringsSep
    elemAt
    filter
    genList
    head
    isAttrs
    isList
    length
    listToAttrs
    map
    mapAttrs
    replaceStrings
    stringLength
    substring
    ;
  applications = import ./applications.nix;

  fail = msg: throw "fediversity configurator: ${msg}";

  domain = panel.domain;
  slug = replaceStrings [ "." ] [ "-" ] domain;
  zone = hosting.dns.zone;
  inZone =
    let
      lz = stringLength zone;
      ld = stringLength domain;
    in
    domain == zone || (ld > lz && substring (ld - lz - 1) (lz + 1) domain == ".${zone}");

  enabled = filter (n: panel.applications.${n}.enable) (attrNames panel.applications);

  # --- outputs of other resources -----------------------------------------
  placeholder = resource: output: {
    __output = { inherit resource output; };
  };
  ref =
    resource: output:
    if !(outputs ? ${resource}) then
      placeholder resource output
    else if outputs.${resource} ? ${output} then
      outputs.${resource}.${output}
    else
      fail "the outputs given for resource \"${resource}\" have no \"${output}\" (they have: ${concatStringsSep ", " (attrNames outputs.${resource})}). Fix: pass all of the resource's outputs, as its provider returned them.";
  # An optional output: null when the resource is known and lacks it.
  optRef =
    resource: output:
    if outputs ? ${resource} then outputs.${resource}.${output} or null else placeholder resource output;
  # A list output that must hold at least one element.
  nonEmpty =
    resource: output: fix:
    let
      v = ref resource output;
    in
    if v == [ ] then
      fail "resource \"${resource}\" reported an empty \"${output}\", which the resources after it need. Fix: ${fix}"
    else
      v;
  first =
    resource: output: fix:
    let
      v = nonEmpty resource output fix;
    in
    if isList v then
      head v
    else
      {
        __output = v.__output // {
          element = 0;
        };
      };

  pick = names: set: listToAttrs (map (n: { name = n; value = set.${n}; }) (filter (n: set ? ${n}) names));

  hasPlaceholder =
    v:
    if isAttrs v then
      v ? __output || v ? __system || any hasPlaceholder (attrValues v)
    else if isList v then
      any hasPlaceholder v
    else
      false;

  checkName =
    what: name:
    if stringLength name > 63 then
      fail "the ${what} \"${name}\" is longer than 63 characters. Fix: choose a shorter domain or application subdomain in the panel."
    else
      name;

  # --- connection settings shared by the resources --------------------------
  proxmox = pick [ "endpoint" "tokenId" "tokenSecret" "caFile" "fingerprint" ] hosting.proxmox;
  garage = pick [ "adminEndpoint" "adminToken" "s3Endpoint" "region" "webEndpoint" ] hosting.garage;
  dns = {
    inherit zone;
    inherit (hosting.dns) server tsig ttl;
    owner = "fediversity:${slug}";
  };
  inherit (hosting.deployer) sshUser;

  # --- the operator's resources --------------------------------------------
  deployerKey = "deployer-key";
  adminPasswordFile = "${hosting.deployer.secretsDir}/${slug}-admin-password";

  operatorResources = {
    ${deployerKey} = {
      provider = "ssh-key";
      type = "keypair";
      state = "required";
      dependsOn = [ ];
      inputs = {
        algorithm = "ed25519";
        privateKeyPath = "${hosting.deployer.keyDir}/${slug}-deployer";
        comment = "fediversity-deployer@${domain}";
      };
    };
  };

  # --- per application ------------------------------------------------------
  appResources =
    index: app:
    let
      def = applications.${app};
      settings = panel.applications.${app};
      fqdn = "${settings.subdomain or app}.${domain}";
      size = def.sizes.${settings.size};
      bucketIds = attrNames def.buckets;
      vm = "${app}-vm";
      key = "${app}-s3-key";
      deployment = "${app}-deployment";
      bucketRes = b: "${app}-${b}-bucket";
      bucketName = b: checkName "bucket name" "${slug}-${app}-${b}";
      nodes = hosting.proxmox.nodes;
      fixAddress = "the VM \"${vm}\" must get an address (DHCP on bridge \"${hosting.proxmox.bridge}\") and run the QEMU guest agent, which reports it.";

      record = type: output: {
        provider = "dns-record";
        type = "record";
        state = "optional";
        dependsOn = [ vm ];
        inputs = dns // {
          name = "${fqdn}.";
          inherit type;
          values = nonEmpty vm output fixAddress;
        };
      };

      bucket = b: {
        name = bucketRes b;
        value = {
          provider = "garage-bucket";
          type = "bucket";
          state = "required";
          dependsOn = [ ];
          inputs =
            {
              inherit garage;
              name = bucketName b;
              onDelete = settings.onDisable;
            }
            // (if def.buckets.${b}.website then { website = { }; } else { })
            // (if def.buckets.${b}.corsRules != null then { corsRules = def.buckets.${b}.corsRules; } else { });
        };
      };

      service = {
        application = app;
        domain = fqdn;
        url = "https://${fqdn}";
        operatorDomain = domain;
        settings = removeAttrs settings [
          "enable"
          "subdomain"
          "size"
          "onDisable"
        ];
        admin = {
          inherit (panel.admin) name email;
          passwordFile = "/run/keys/admin-password";
        };
        s3 = {
          endpoint = hosting.garage.s3Endpoint;
          inherit (hosting.garage) region;
          accessKeyId = ref key "accessKeyId";
          secretAccessKeyFile = "/run/keys/s3-secret-key";
          buckets = listToAttrs (
            map (b: {
              name = b;
              value = {
                name = bucketName b;
                publicUrl = if hosting.garage ? webEndpoint then optRef (bucketRes b) "websiteUrl" else null;
              };
            }) bucketIds
          );
        };
        # The deployer must still get in after the switch.
        ssh.authorizedKeys = [ (ref deployerKey "publicKey") ];
        # E-mail seam: no provider yet; see `seams.email`.
        smtp = null;
      };
    in
    listToAttrs (map bucket bucketIds)
    // {
      ${vm} = {
        provider = "proxmox-vm";
        type = "vm";
        state = "required";
        dependsOn = [ deployerKey ];
        inputs =
          {
            inherit proxmox;
            node = elemAt nodes (index - (index / length nodes) * length nodes);
            template = hosting.proxmox.template;
            inherit (hosting.proxmox) storage;
            name = checkName "VM name" "${app}-${slug}";
            description = "${def.description} for ${domain} (${fqdn}), managed by the Fediversity configurator.";
            tags = [
              "fediversity"
              app
            ];
            inherit (size) cores memory;
            disks = [
              {
                slot = "scsi0";
                sizeGib = size.diskGib;
              }
            ];
            networks = [ ({ inherit (hosting.proxmox) bridge; } // pick [ "vlan" ] hosting.proxmox) ];
            onBoot = true;
            waitForAgent = true;
            cloudInit = {
              user = sshUser;
              sshKeys = [ (ref deployerKey "publicKey") ];
              ipConfigs = [
                ({ ipv4 = hosting.proxmox.ipv4; } // (if hosting.dns.ipv6 then { ipv6 = "auto"; } else { }))
              ];
            };
          }
          // pick [ "pool" ] hosting.proxmox;
      };

      ${key} = {
        provider = "garage-bucket";
        type = "key";
        state = "required";
        dependsOn = map bucketRes bucketIds;
        inputs = {
          inherit garage;
          name = "${slug}-${app}";
          secretKeyPath = "${hosting.deployer.s3SecretDir}/${slug}-${app}";
          allowCreateBucket = false;
          # Exactly these: read and write on the application's own buckets.
          permissions = map (b: {
            bucket = ref (bucketRes b) "bucketId";
            read = true;
            write = true;
            owner = false;
          }) bucketIds;
          verify = hosting.garage.verifyKeys;
        };
      };

      "${app}-dns-a" = record "A" "ipv4Addresses";

      ${deployment} = {
        provider = "nixos-config";
        type = "deployment";
        state = "optional";
        dependsOn = [
          deployerKey
          vm
          key
        ] ++ map bucketRes bucketIds;
        inputs = {
          system =
            systems.${app} or {
              __system = {
                application = app;
                configuration = "service";
              };
            };
          host = first vm "ipv4Addresses" fixAddress;
          hostPublicKey = ref vm "sshHostKey";
          sshKeyFile = ref deployerKey "privateKeyPath";
          user = sshUser;
          sudo = sshUser != "root";
          goal = "switch";
          inherit (hosting.deployer) checkSignatures;
          keys = [
            {
              name = "s3-secret-key";
              file = ref key "secretKeyPath";
              permissions = "0600";
            }
            {
              name = "admin-password";
              file = adminPasswordFile;
              permissions = "0600";
            }
          ];
        };
        # What the NixOS configuration of the VM is built from (by the
        # module-system glue, which needs nixpkgs); its toplevel becomes
        # `inputs.system` through the `systems` argument.
        inherit service;
      };
    }
    // (if hosting.dns.ipv6 then { "${app}-dns-aaaa" = record "AAAA" "ipv6Addresses"; } else { });

  resources =
    if enabled == [ ] then
      { }
    else
      operatorResources // builtins.foldl' (acc: r: acc // r) { } (genList (i: appResources i (elemAt enabled i)) (length enabled));

  names = attrNames resources;

  # The panel and the hosting configuration, checked whole before anything
  # else. Their checks are lazy, field by field (check.nix), and NixOps4
  # forces one member's inputs at a time and applies each member as soon as
  # its own inputs evaluate (nixops4 rust/nixops4/src/work.rs,
  # `resolve_resource_inputs`): a bad value would surface only on the
  # resources that read it, after the others were applied, and one used
  # only in a NixOS system last of all. Every part of the graph goes through
  # this, so the member set and each member's inputs fail first.
  checkedWhole = builtins.deepSeq panel (builtins.deepSeq hosting true);
in
assert checkedWhole;
if !inZone then
  fail "the operator's domain \"${domain}\" is not in the DNS zone \"${zone}\" of the hosting configuration. Fix: use a domain under \"${zone}\" in the panel, or the zone that holds it in the hosting configuration."
else
  {
    inherit resources;
    # Resources whose inputs are all known: they can be applied now.
    ready = filter (n: !hasPlaceholder resources.${n}.inputs) names;
    # Resources that wait for outputs of others (or a built system).
    pending = filter (n: hasPlaceholder resources.${n}.inputs) names;
    urls = listToAttrs (map (app: { name = app; value = resources."${app}-deployment".service.url; }) enabled);
    seams = {
      # The operator's admin password: a secret generated once on the
      # deploying machine (no provider for it yet: the driver writes
      # `bytes` random bytes, base64, to `file`, mode 0600, when missing)
      # and uploaded to every VM as /run/keys/admin-password.
      adminPassword = {
        kind = "generated-secret";
        file = adminPasswordFile;
        bytes = 24;
        encoding = "base64";
        usedBy = map (app: "${app}-deployment") enabled;
      };
      # E-mail: no provider yet. What each application will ask of one;
      # services are configured with `smtp = null` meanwhile.
      email = listToAttrs (
        map (app: {
          name = app;
          value = {
            provider = null;
            fromAddress = "notifications@${resources."${app}-deployment".service.domain}";
            consumer = "${app}-deployment";
          };
        }) (filter (app: applications.${app}.email) enabled)
      );
      # The NixOS systems to build (module-system glue, nixpkgs needed) from
      # each deployment's `service`, once it holds no placeholder.
      nixosSystems = listToAttrs (
        map (app: {
          name = app;
          value = {
            resource = "${app}-deployment";
            buildable = !hasPlaceholder resources."${app}-deployment".service;
            built = systems ? ${app};
          };
        }) enabled
      );
    };
  }
