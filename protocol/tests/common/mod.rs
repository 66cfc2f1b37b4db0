//! Shared by the protocol crate's integration tests.

use std::path::PathBuf;

/// Path of one of this crate's example binaries (built by `cargo test`).
pub fn example_exe(name: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/<test>-<hash>; examples are
    // in target/<profile>/examples/.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing; `cargo test` builds it (run the tests with cargo test)",
        path.display()
    );
    path
}

/// The test provider.
pub fn test_provider() -> fedi_protocol::testkit::Harness {
    fedi_protocol::testkit::Harness::new(example_exe("test-provider"))
}
