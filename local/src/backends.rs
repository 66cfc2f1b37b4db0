//! The local backends of the deployment, all real but Proxmox VE: Garage
//! (single node), Knot DNS serving the zone `fedi.test`, the Proxmox VE API
//! test server whose VMs boot SSH/Nix guests, and the hosting provider's
//! configuration that points the configurator at them.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Sets up the private network namespace this process runs in: loopback
/// and the VMs' bridge.
pub fn set_up_network() -> Result<(), String> {
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["link", "add", BRIDGE, "type", "bridge"],
        vec!["link", "set", BRIDGE, "up"],
    ] {
        let output = Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    Ok(())
}

impl Backends {
    /// Starts everything under `dir`, and writes the hosting configuration
    /// (`dir/hosting.nix`, from `template`: examples/local/hosting.nix).
    pub fn start(dir: &Path, template: &Path) -> Result<Backends, String> {
        let guests_dir = dir.join("guests");
        std::fs::create_dir_all(&guests_dir).map_err(|e| e.to_string())?;
        // Garage takes the longest to come up: start it beside the others.
        let garage = std::thread::spawn(GarageServer::start);
        let dns = dns::Server::start_with_zones(Kind::Knot, &[(ZONE, ZONE_FILE)]);
        let pve =
            Pve::start_with_guests(Timing::default(), Box::new(LocalGuests::new(&guests_dir)));
        pve.add_template(9001, "nixos-cloudinit", "pve1");
        let garage = garage
            .join()
            .map_err(|_| "Garage did not start; its log is above".to_string())?;

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
        std::fs::write(&backends_file, backends.to_string()).map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())?;
        Ok(Backends {
            garage,
            dns,
            pve,
            guests_dir,
            hosting_file,
        })
    }
}
