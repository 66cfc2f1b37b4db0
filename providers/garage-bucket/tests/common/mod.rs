//! The real Garage server ([`fedi_testbeds::garage`]) plus what only these
//! tests need: the provider harness and an S3 client.

#![allow(dead_code, unused_imports)]

use fedi_protocol::testkit::Harness;
pub use fedi_testbeds::garage::{ADMIN_TOKEN, GarageServer};

pub fn provider() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_fedi-garage-bucket"))
}

/// An S3 client for `garage` with the given credentials.
pub fn s3(garage: &GarageServer, access_key_id: &str, secret: &str) -> aws_sdk_s3::Client {
    let credentials =
        aws_sdk_s3::config::Credentials::new(access_key_id, secret, None, None, "test");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("garage"))
        .endpoint_url(format!("http://127.0.0.1:{}", garage.s3_port))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Runs an async block on a fresh runtime (the tests are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
