//! `fedi-garage-bucket`: the NixOps4 resource provider for buckets and
//! access keys on Garage (admin API v2, S3 through `aws-sdk-s3`).
//!
//! Resource types:
//! - [`bucket`]: a bucket with quotas, website access, CORS, keep/purge on
//!   delete;
//! - [`key`]: an access key with exact bucket permissions, its secret in a
//!   0600 file.

mod bucket;
mod garage;
mod key;
mod owner;
mod purge;

fn main() -> std::process::ExitCode {
    fedi_protocol::provider!(
        "garage-bucket",
        "Buckets and access keys on a Garage cluster (admin API v2): buckets with quotas, \
         website access, CORS and a keep-or-purge choice for their data; access keys with exact \
         permissions, their secrets kept in files on the deploying machine."
    )
    .resource(bucket::Bucket)
    .resource(key::Key)
    .run()
}
