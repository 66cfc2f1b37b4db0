//! Emptying a bucket through S3 before deleting it (`onDelete = "purge"`).
//!
//! The admin API cannot delete objects, so purge makes a temporary access
//! key with full rights on the bucket, deletes every object and aborts every
//! unfinished multipart upload through S3, and deletes the key again. The
//! key's id is derived from the bucket id, so a purge retried after a crash
//! reuses it instead of leaving another one behind.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use fedi_protocol::{Error, Result, SecretString};
use reqwest::Method;
use serde_json::{Value, json};

use crate::garage::{
    Admin, BucketInfo, Garage, Permissions, derived_key_id, random_secret, s3_client,
};

/// The temporary key's own name for the bucket: S3 addresses buckets by
/// alias, and the bucket's global alias may be anything (or nothing).
const LOCAL_ALIAS: &str = "fedi-purge";

/// Deletes every object and unfinished upload of `bucket`.
pub async fn purge(admin: &Admin, garage: &Garage, bucket: &BucketInfo) -> Result<()> {
    let key_id = derived_key_id(&format!("fedi-purge:{}", bucket.id));
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
    let mut deleted = 0usize;
    loop {
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
        let keys: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
            .collect();
        if keys.is_empty() {
            break;
        }
        deleted += keys.len();
        let delete = Delete::builder()
            .set_objects(Some(keys))
            .quiet(true)
            .build()
            .map_err(|e| Error::internal("building the delete request failed").with_source(e))?;
        s3.delete_objects()
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
    }
    let mut aborted = 0usize;
    loop {
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
        if uploads.uploads().is_empty() {
            break;
        }
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
    }
    tracing::info!(bucket = %bucket.id, deleted, aborted, "purged the bucket's data");
    Ok(())
}
