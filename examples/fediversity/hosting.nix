# The hosting provider's runtime configuration for the local end-to-end
# deployment: every backend on loopback, every secret a file under
# `stateDir` (written by the local backends' set-up; none is in this file).
# A real hosting provider replaces the endpoints, names and paths.
{
  stateDir ? "/tmp/fediversity-local",
}:
{
  proxmox = {
    # The crate's Proxmox VE API test server (providers/proxmox-vm/tests/pve).
    endpoint = "https://127.0.0.1:8006";
    tokenId = "deployer@pve!fediversity";
    tokenSecret.file = "${stateDir}/secrets/proxmox-token";
    caFile = "${stateDir}/pve/ca.pem";
    nodes = [ "pve1" ];
    template.name = "nixos-cloudinit";
    storage = "local-lvm";
    bridge = "vmbr0";
  };

  garage = {
    adminEndpoint = "http://127.0.0.1:3903";
    adminToken.file = "${stateDir}/secrets/garage-admin-token";
    s3Endpoint = "http://127.0.0.1:3900";
    webEndpoint = "http://web.garage.localhost:3902";
    region = "garage";
  };

  dns = {
    server = {
      address = "127.0.0.1";
      port = 5353;
    };
    zone = "fedi.test";
    tsig = {
      keyName = "fediversity";
      algorithm = "hmac-sha256";
      secret.file = "${stateDir}/secrets/tsig-fediversity";
    };
    ttl = 300;
    ipv6 = true;
  };

  deployer = {
    keyDir = "${stateDir}/keys";
    s3SecretDir = "${stateDir}/s3";
    secretsDir = "${stateDir}/secrets";
    sshUser = "root";
    # The local test host's Nix trusts the deploying user.
    checkSignatures = false;
  };
}
