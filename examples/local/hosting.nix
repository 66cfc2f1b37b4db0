# The hosting provider's runtime configuration of the local deployment
# (`fedi-local`): every backend is local, started by `fedi-local`, which
# passes their endpoints, ports and secret files as `backends` (it writes
# them to <state dir>/backends.json). No secret is in this file: tokens and
# keys are files the backends made.
#
# A real hosting provider writes the same options with its own endpoints;
# see examples/fediversity/hosting.nix. As a `hostingFile` this needs its
# `backends` given: `hostingArgs.backends = ...;` (configureFiles, the
# component's `fediversity.hostingArgs`, or `--arg hostingArgs` to
# nix/configurator/eval.nix).
{ backends }:
let
  inherit (backends) proxmox garage dns stateDir;
in
{
  proxmox = {
    inherit (proxmox) endpoint tokenId caFile bridge;
    tokenSecret.file = proxmox.tokenSecretFile;
    nodes = [ proxmox.node ];
    template.name = proxmox.template;
    storage = "local-lvm";
  };

  garage = {
    inherit (garage) adminEndpoint s3Endpoint webEndpoint;
    adminToken.file = garage.adminTokenFile;
    region = "garage";
  };

  dns = {
    server = { inherit (dns) address port; };
    inherit (dns) zone;
    tsig = {
      inherit (dns) keyName;
      algorithm = "hmac-sha256";
      secret.file = dns.secretFile;
    };
    ttl = 300;
    ipv6 = true;
  };

  deployer = {
    keyDir = "${stateDir}/keys";
    s3SecretDir = "${stateDir}/s3";
    secretsDir = "${stateDir}/secrets";
    sshUser = "root";
    # The guests' Nix trusts root, who deploys.
    checkSignatures = false;
  };
}
