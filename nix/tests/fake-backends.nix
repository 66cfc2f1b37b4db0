# What fedi-local passes examples/local/hosting.nix as `backends` (it writes
# them to <state dir>/backends.json; local/src/backends.rs), with made-up
# endpoints and files, for tests that use that file as a `hostingFile`.
{
  stateDir = "/tmp/fediversity-local-test";
  proxmox = {
    endpoint = "https://127.0.0.1:8006";
    tokenId = "deployer@pve!fediversity";
    tokenSecretFile = "/tmp/fediversity-local-test/pve/token";
    caFile = "/tmp/fediversity-local-test/pve/ca.pem";
    node = "pve1";
    template = "nixos-cloudinit";
    bridge = "vmbr0";
  };
  garage = {
    adminEndpoint = "http://127.0.0.1:3903";
    adminTokenFile = "/tmp/fediversity-local-test/garage/admin-token";
    s3Endpoint = "http://127.0.0.1:3900";
    webEndpoint = "http://web.garage.localhost:3902";
  };
  dns = {
    address = "127.0.0.1";
    port = 5353;
    zone = "fedi.test";
    keyName = "deploy";
    secretFile = "/tmp/fediversity-local-test/dns/deploy.secret";
  };
}
