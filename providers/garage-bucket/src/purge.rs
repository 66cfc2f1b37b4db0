//! Emptying a bucket through S3 before deleting it (`onDelete = "purge"`).
//!
//! The admin API cannot delete objects, so purge makes a temporary access
//! key with full rights on the bucket, deletes every object and aborts every
//! unfinished multipart upload through S3, and deletes the key again. The
//! key's id is derived from the bucket id, so a purge retried after a crash
//! reuses it instead of leaving another one behind.

use std::time::{Duration, Instant};

use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use fedi_protocol::{Error, Result, SecretString};
use reqwest::Method;
use serde_json::{Value, json};

use crate::garage::{Admin, BucketInfo, Garage, Permissions, random_secret, s3_client};

/// The temporary key's own name for the bucket: S3 addresses buckets by
/// alias, and the bucket's global alias may be anything (or nothing).
const LOCAL_ALIAS: &str = "fedi-purge";

/// How long a purge may take in all: a bucket that keeps being written to
/// while it is purged would otherwise never be empty.
const PURGE_DEADLINE: Duration = Duration::from_secs(3600);

fn check_deadline(deadline: Instant, bucket: &BucketInfo, deleted: usize) -> Result<()> {
    if Instant::now() < deadline {
        return Ok(());
    }
    Err(Error::unavailable(format!(
        "purging bucket {} did not finish within {} s ({deleted} objects deleted so far)",
        bucket.id,
        PURGE_DEADLINE.as_secs()
    ))
    .with_hint("stop what still writes to the bucket, then run the delete again; it goes on where it stopped"))
}

/// S3's `DeleteObjects` answers 200 even when objects were not deleted,
/// and lists them as errors: each is a failure of the purge.
fn check_deleted(answer: &DeleteObjectsOutput, bucket: &BucketInfo) -> Result<()> {
    let errors = answer.errors();
    let Some(first) = errors.first() else {
        return Ok(());
    };
    Err(Error::unavailable(format!(
        "purging bucket {}: S3 did not delete {} objects, the first `{}`: {} {}",
        bucket.id,
        errors.len(),
        first.key().unwrap_or("?"),
        first.code().unwrap_or("(no code)"),
        first.message().unwrap_or(""),
    ))
    .with_hint("fix what S3 reports, then run the delete again; it goes on where it stopped"))
}

/// A listing after a round of deletes that lists exactly what the round
/// deleted: S3 said yes and nothing went; looping again would never end.
fn check_progress(
    previous: &[String],
    listed: &[String],
    bucket: &BucketInfo,
    what: &str,
) -> Result<()> {
    if previous.is_empty() || previous != listed {
        return Ok(());
    }
    Err(Error::unavailable(format!(
        "purging bucket {}: the same {} {what} are listed again after they were deleted; no progress",
        bucket.id,
        listed.len()
    ))
    .with_hint("check the S3 endpoint (`garage.s3Endpoint`) is the Garage that holds the bucket, then run the delete again"))
}

/// Deletes every object and unfinished upload of `bucket`.
pub async fn purge(admin: &Admin, garage: &Garage, bucket: &BucketInfo) -> Result<()> {
    let key_id = admin.derive_key_id("purge", &[&bucket.id]);
    let secret = temporary_key(admin, &key_id, bucket).await?;
    let result = empty(garage, &key_id, &secret, bucket).await;
    // Remove the temporary key and its alias whatever happened; a failed
    // removal is only worth a warning (a retried purge reuses the key).
    let alias = json!({"bucketId": bucket.id, "accessKeyId": key_id, "localAlias": LOCAL_ALIAS});
    let _ = admin
        .call::<Value>(Method::POST, "RemoveBucketAlias", &[], Some(&alias))
        .await;
    if let Err(e) = admin
        .call::<Value>(Method::POST, "DeleteKey", &[("id", &key_id)], None)
        .await
    {
        tracing::warn!(key = %key_id, "could not delete the temporary purge key: {}", e.error);
    }
    result
}

async fn temporary_key(admin: &Admin, key_id: &str, bucket: &BucketInfo) -> Result<SecretString> {
    let secret = match admin.key(key_id, true).await? {
        Some(existing) => existing
            .secret_access_key
            .ok_or_else(|| Error::internal("Garage did not return the temporary key's secret"))?,
        None => {
            let secret = random_secret();
            let body = json!({
                "accessKeyId": key_id,
                "secretAccessKey": fedi_protocol::ExposeSecret::expose_secret(&secret),
                "name": format!("fedi-purge-{}", bucket.id),
            });
            admin
                .call::<Value>(Method::POST, "ImportKey", &[], Some(&body))
                .await?;
            secret
        }
    };
    let all = Permissions {
        read: true,
        write: true,
        owner: true,
    };
    admin
        .change_permissions(true, &bucket.id, key_id, all)
        .await?;
    if !admin.key(key_id, false).await?.is_some_and(|k| {
        k.buckets
            .iter()
            .any(|b| b.id == bucket.id && b.local_aliases.iter().any(|a| a == LOCAL_ALIAS))
    }) {
        let alias =
            json!({"bucketId": bucket.id, "accessKeyId": key_id, "localAlias": LOCAL_ALIAS});
        admin
            .call::<Value>(Method::POST, "AddBucketAlias", &[], Some(&alias))
            .await?;
    }
    Ok(secret)
}

async fn empty(
    garage: &Garage,
    key_id: &str,
    secret: &SecretString,
    bucket: &BucketInfo,
) -> Result<()> {
    let s3 = s3_client(garage, key_id, secret);
    let name = LOCAL_ALIAS;
    let s3_error = |what: &str, e: &dyn std::fmt::Display| {
        Error::unavailable(format!(
            "purging bucket {}: {what} failed through S3 at {}: {e}",
            bucket.id, garage.s3_endpoint
        ))
        .with_hint("check `garage.s3Endpoint` and `garage.region`, then run the delete again")
    };
    let deadline = Instant::now() + PURGE_DEADLINE;
    let mut deleted = 0usize;
    let mut previous: Vec<String> = Vec::new();
    loop {
        check_deadline(deadline, bucket, deleted)?;
        let page = s3
            .list_objects_v2()
            .bucket(name)
            .max_keys(1000)
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    "listing objects",
                    &aws_sdk_s3::error::DisplayErrorContext(e),
                )
            })?;
        let listed: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .map(str::to_owned)
            .collect();
        if listed.is_empty() {
            break;
        }
        check_progress(&previous, &listed, bucket, "objects")?;
        let keys: Vec<ObjectIdentifier> = listed
            .iter()
            .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
            .collect();
        let delete = Delete::builder()
            .set_objects(Some(keys))
            .quiet(true)
            .build()
            .map_err(|e| Error::internal("building the delete request failed").with_source(e))?;
        let answer = s3
            .delete_objects()
            .bucket(name)
            .delete(delete)
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    "deleting objects",
                    &aws_sdk_s3::error::DisplayErrorContext(e),
                )
            })?;
        check_deleted(&answer, bucket)?;
        deleted += listed.len();
        previous = listed;
    }
    let mut aborted = 0usize;
    let mut previous: Vec<String> = Vec::new();
    loop {
        check_deadline(deadline, bucket, deleted)?;
        let uploads = s3
            .list_multipart_uploads()
            .bucket(name)
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    "listing multipart uploads",
                    &aws_sdk_s3::error::DisplayErrorContext(e),
                )
            })?;
        let listed: Vec<String> = uploads
            .uploads()
            .iter()
            .filter_map(|u| u.upload_id())
            .map(str::to_owned)
            .collect();
        if listed.is_empty() {
            break;
        }
        check_progress(&previous, &listed, bucket, "unfinished uploads")?;
        for upload in uploads.uploads() {
            let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            s3.abort_multipart_upload()
                .bucket(name)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
                .map_err(|e| {
                    s3_error(
                        "aborting an upload",
                        &aws_sdk_s3::error::DisplayErrorContext(e),
                    )
                })?;
            aborted += 1;
        }
        previous = listed;
    }
    tracing::info!(bucket = %bucket.id, deleted, aborted, "purged the bucket's data");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> BucketInfo {
        serde_json::from_value(serde_json::json!({
            "id": "b0", "globalAliases": [], "websiteAccess": false, "objects": 0,
            "bytes": 0, "quotas": {"maxSize": null, "maxObjects": null},
        }))
        .unwrap()
    }

    #[test]
    fn per_object_delete_errors_fail_the_purge() {
        let ok = DeleteObjectsOutput::builder().build();
        check_deleted(&ok, &bucket()).unwrap();
        let failed = DeleteObjectsOutput::builder()
            .errors(
                aws_sdk_s3::types::Error::builder()
                    .key("toot.jpg")
                    .code("AccessDenied")
                    .message("Access Denied")
                    .build(),
            )
            .build();
        let e = check_deleted(&failed, &bucket()).unwrap_err().to_string();
        assert!(
            e.contains("did not delete 1 objects, the first `toot.jpg`: AccessDenied"),
            "{e}"
        );
    }

    #[test]
    fn the_same_listing_after_a_delete_is_no_progress() {
        let a = vec!["x".to_string(), "y".to_string()];
        check_progress(&[], &a, &bucket(), "objects").unwrap();
        check_progress(&a, &a[1..], &bucket(), "objects").unwrap();
        let e = check_progress(&a, &a, &bucket(), "objects")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no progress"), "{e}");
    }
}
