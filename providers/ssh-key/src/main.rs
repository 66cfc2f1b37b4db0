//! `fedi-ssh-key`: the NixOps4 resource provider for SSH key pairs that
//! persist across deployments.
//!
//! Resource types:
//! - [`keypair`]: a key pair generated once, its private half in a file on
//!   the deploying machine, its public half an output.

mod keypair;

fn main() -> std::process::ExitCode {
    fedi_protocol::provider!(
        "ssh-key",
        "SSH key pairs that persist across deployments: generated once, the private key kept in \
         a file on the deploying machine (never in the Nix store or, by default, the state), \
         the public key and fingerprint as outputs."
    )
    .resource(keypair::KeyPair)
    .run()
}
