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
    elem
    elemAt
    filter
    hashString
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
  # The operator's part of every backend name: the domain with each `-`
  # doubled and each `.` made `-` (`alice.shop.fedi.test` is
  # `alice-shop-fedi-test`, `alice-shop.fedi.test` is `alice--shop-fedi-test`).
  # A domain's labels never start or end with `-` (panel.nix), so no `.` is
  # next to a `-`: a single `-` was a `.`, a pair a `-`, and the slug gives
  # the domain back. Names stay as they were for domains without `-`.
  slug = replaceStrings [ "-" "." ] [ "--" "-" ] domain;
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

  # A backend name within `limit` characters and free of `badPrefixes`:
  # `name` itself when it is, else a readable part of it, `---` and the
  # first 16 hex digits of its SHA-256. A name made as above never holds
  # `---` (a run of `-` in it is one `-`, a `.`, or an even number, doubled
  # `-`s), so a shortened name never equals a name kept whole, and two
  # shortened ones are equal only if their hashes are (64 bits).
  fit =
    limit: badPrefixes: name:
    let
      bad = n: any (p: substring 0 (stringLength p) n == p) badPrefixes;
      dropBad = n: builtins.foldl' (acc: p: if substring 0 (stringLength p) acc == p then substring (stringLength p) (stringLength acc) acc else acc) n badPrefixes;
      trim =
        n:
        if n != "" && substring 0 1 n == "-" then
          trim (substring 1 (stringLength n) n)
        else if n != "" && substring (stringLength n - 1) 1 n == "-" then
          trim (substring 0 (stringLength n - 1) n)
        else
          n;
      readable = trim (substring 0 (limit - 19) (trim (dropBad name)));
    in
    if stringLength name <= limit && !(bad name) then
      name
    else
      "${if readable == "" then "n" else readable}---${substring 0 16 (hashString "sha256" name)}";
  # Proxmox VM names are DNS labels; S3 bucket names 3 to 63 characters,
  # not starting with what S3 reserves; file names at most 255 bytes.
  vmName = fit 63 [ ];
  bucketName' = fit 63 [
    "xn--"
    "sthree-"
    "amzn-s3-demo-"
  ];
  fileName = fit 255 [ ];

  # --- connection settings shared by the resources --------------------------
  proxmox = pick [ "endpoint" "tokenId" "tokenSecret" "caFile" "fingerprint" ] hosting.proxmox;
  garage = pick [ "adminEndpoint" "adminToken" "keyIdSecret" "s3Endpoint" "region" "webEndpoint" ] hosting.garage;
  # Recorded on the operator's buckets and part of its key ids (ADR 009).
  owner = "fediversity:${slug}";
  dns = {
    inherit zone;
    inherit (hosting.dns) server tsig ttl;
    inherit owner;
  };
  inherit (hosting.deployer) sshUser;

  # --- the operator's resources --------------------------------------------
  deployerKey = "deployer-key";
  adminPasswordFile = "${hosting.deployer.secretsDir}/${fileName "${slug}-admin-password"}";

  operatorResources = {
    ${deployerKey} = {
      provider = "ssh-key";
      type = "keypair";
      state = "required";
      dependsOn = [ ];
      inputs = {
        algorithm = "ed25519";
        privateKeyPath = "${hosting.deployer.keyDir}/${fileName "${slug}-deployer"}";
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
      bucketName = b: bucketName' "${slug}-${app}-${b}";
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
              inherit garage owner;
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
            name = vmName "${app}-${slug}";
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
          inherit garage owner;
          name = "${slug}-${app}";
          secretKeyPath = "${hosting.deployer.s3SecretDir}/${fileName "${slug}-${app}"}";
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

  # Every name this operator's resources take on a backend, by the backend
  # that holds it. Two resources, of one operator or of two
  # (`checkOperators` in default.nix), must never share one: every provider
  # would take the other's object for its own. Only panel and hosting
  # configuration go into these, no output.
  backendNames =
    concatLists (
      map (
        n:
        let
          r = resources.${n};
          entry = backend: name: {
            inherit backend name;
            resource = n;
          };
        in
        if r.provider == "proxmox-vm" then
          [ (entry "Proxmox VM name" r.inputs.name) ]
        else if r.provider == "garage-bucket" && r.type == "bucket" then
          [ (entry "Garage bucket name" r.inputs.name) ]
        else if r.provider == "garage-bucket" && r.type == "key" then
          [
            (entry "Garage key name" r.inputs.name)
            (entry "file on the deploying machine" r.inputs.secretKeyPath)
          ]
        else if r.provider == "ssh-key" then
          [ (entry "file on the deploying machine" r.inputs.privateKeyPath) ]
        else if r.provider == "dns-record" then
          [ (entry "DNS record" "${r.inputs.name} ${r.inputs.type}") ]
        else
          [ ]
      ) names
    )
    ++ (
      if resources == { } then
        [ ]
      else
        [
          {
            backend = "file on the deploying machine";
            name = adminPasswordFile;
            resource = "seams.adminPassword";
          }
          {
            backend = "DNS ownership record owner";
            name = dns.owner;
            resource = "every DNS record";
          }
        ]
    );

  # Two of this operator's own resources that would share a backend name.
  ownClash =
    let
      clashes = concatLists (
        genList (
          i:
          let
            a = elemAt backendNames i;
          in
          map (b: { inherit a b; }) (
            filter (b: b.backend == a.backend && b.name == a.name) (
              genList (j: elemAt backendNames (i + 1 + j)) (length backendNames - i - 1)
            )
          )
        ) (length backendNames)
      );
    in
    if clashes == [ ] then
      true
    else
      let
        c = head clashes;
      in
      fail "resources \"${c.a.resource}\" and \"${c.b.resource}\" would both use the ${c.a.backend} \"${c.a.name}\", and each would take the other's for its own. Fix: give them different names (for a file, point the hosting configuration's deployer directories at different places).";

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
assert ownClash;
if !inZone then
  fail "the operator's domain \"${domain}\" is not in the DNS zone \"${zone}\" of the hosting configuration. Fix: use a domain under \"${zone}\" in the panel, or the zone that holds it in the hosting configuration."
else
  {
    inherit resources backendNames;
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
