//! The local backends of the deployment, all real but Proxmox VE: Garage
//! (single node), Knot DNS serving the zone `fedi.test`, the Proxmox VE API
//! test server whose VMs boot SSH/Nix guests, and the hosting provider's
//! configuration that points the configurator at them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use fedi_testbeds::dns::{self, Kind};
use fedi_testbeds::garage::GarageServer;
use fedi_testbeds::pve::{self, Pve, Timing};
use serde_json::json;

use crate::guests::{BRIDGE, LocalGuests};

/// The DNS zone of the local hosting provider.
pub const ZONE: &str = "fedi.test";

const ZONE_FILE: &str = "$ORIGIN fedi.test.
$TTL 300
@       SOA   ns1 hostmaster 1 3600 600 86400 300
@       NS    ns1
ns1     A     127.0.0.1
";

/// The running backends; stopped when dropped.
pub struct Backends {
    /// Garage.
    pub garage: GarageServer,
    /// Knot DNS.
    pub dns: dns::Server,
    /// The Proxmox VE API server.
    pub pve: Pve,
    /// Where the guests keep their disks.
    pub guests_dir: PathBuf,
    /// The hosting provider's configuration for the configurator.
    pub hosting_file: PathBuf,
}

impl Backends {
    /// Starts everything under `dir`, and writes the hosting configuration
    /// (`dir/hosting.nix`, from `template`: examples/local/hosting.nix).
    pub fn start(dir: &Path, template: &Path) -> Result<Backends> {
        let guests_dir = dir.join("guests");
        std::fs::create_dir_all(&guests_dir)
            .with_context(|| format!("cannot create {}", guests_dir.display()))?;
        // Garage takes the longest to come up: start it beside the others.
        let garage = std::thread::spawn(GarageServer::start);
        let dns = dns::Server::start_with_zones(Kind::Knot, &[(ZONE, ZONE_FILE)]);
        let pve =
            Pve::start_with_guests(Timing::default(), Box::new(LocalGuests::new(&guests_dir)));
        pve.add_template(9001, "nixos-cloudinit", "pve1");
        let garage = garage
            .join()
            .map_err(|_| anyhow!("Garage did not start; its log is above"))?;

        let backends = json!({
            "stateDir": dir,
            "proxmox": {
                "endpoint": pve.endpoint(),
                "tokenId": pve::TOKEN_ID,
                "tokenSecretFile": pve.token_file,
                "caFile": pve.ca_file,
                "node": "pve1",
                "template": "nixos-cloudinit",
                "bridge": BRIDGE,
            },
            "garage": {
                "adminEndpoint": format!("http://127.0.0.1:{}", garage.admin_port),
                "adminTokenFile": garage.token_file,
                "s3Endpoint": format!("http://127.0.0.1:{}", garage.s3_port),
                "webEndpoint": format!("http://web.garage.localhost:{}", garage.web_port),
            },
            "dns": {
                "address": "127.0.0.1",
                "port": dns.port,
                "zone": ZONE,
                "keyName": "deploy",
                "secretFile": dns.deploy_secret_file,
            },
        });
        let backends_file = dir.join("backends.json");
        std::fs::write(&backends_file, backends.to_string())
            .with_context(|| format!("cannot write {}", backends_file.display()))?;
        let hosting_file = dir.join("hosting.nix");
        std::fs::write(
            &hosting_file,
            format!(
                "# Written by fedi-local: the local backends of this run.\n\
                 import {} {{ backends = builtins.fromJSON (builtins.readFile {}); }}\n",
                template.display(),
                backends_file.display()
            ),
        )
        .with_context(|| format!("cannot write {}", hosting_file.display()))?;
        Ok(Backends {
            garage,
            dns,
            pve,
            guests_dir,
            hosting_file,
        })
    }
}
