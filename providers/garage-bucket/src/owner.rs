//! Who a bucket or key belongs to (ADR 009).
//!
//! Garage has no labels or metadata on buckets or keys, so ownership is
//! recorded in what Garage keeps and only the hosting provider can
//! reproduce:
//!
//! - an access key's id is derived (HMAC-SHA256 with `garage.keyIdSecret`)
//!   from the resource's `owner` and `name`: a retried create finds the key
//!   its crashed attempt made, and nobody without the secret can plant one
//!   there;
//! - a bucket carries a local alias (its own name) in the namespace of an
//!   *ownership key*, a key without permissions or a usable secret whose id
//!   is derived the same way and whose name says, readably, whose it is.

use fedi_protocol::{Error, ExposeSecret, Result};
use reqwest::Method;
use serde_json::{Value, json};

use crate::garage::{Admin, BucketInfo, KeyInfo, random_secret};

/// What the name of every ownership key starts with.
pub const OWNERSHIP_KEY_PREFIX: &str = "fedi-garage-bucket ownership: owner=";

/// Checks an `owner` input: printable, no spaces, at most 200 characters.
pub fn validate_owner(owner: &str) -> Result<()> {
    if owner.len() <= 200 && owner.chars().all(|c| c.is_ascii_graphic()) {
        return Ok(());
    }
    Err(Error::invalid_input(
        "owner",
        "must be at most 200 printable ASCII characters without spaces",
    )
    .with_hint("name the deployment and operator, e.g. \"fediversity:alice-fedi-test\""))
}

/// The ownership key of bucket `name` of `owner`: its id and its name.
pub fn ownership_key(admin: &Admin, owner: &str, name: &str) -> (String, String) {
    (
        admin.derive_key_id("bucket-owner", &[owner, name]),
        format!("{OWNERSHIP_KEY_PREFIX}{owner} bucket={name}"),
    )
}

/// Who the bucket's ownership records say it belongs to.
pub enum Ownership {
    /// It carries this resource's record.
    Ours,
    /// It carries only records of others: (owner key id, key name).
    Others(Vec<(String, String)>),
    /// It carries no record of this provider at all.
    Unrecorded,
}

/// Reads the bucket's ownership records against `(owner, name)`.
pub fn ownership(info: &BucketInfo, key_id: &str) -> Ownership {
    let records: Vec<_> = info
        .keys
        .iter()
        .filter(|k| !k.bucket_local_aliases.is_empty())
        .filter(|k| k.access_key_id == key_id || k.name.starts_with(OWNERSHIP_KEY_PREFIX))
        .collect();
    if records.iter().any(|k| k.access_key_id == key_id) {
        Ownership::Ours
    } else if records.is_empty() {
        Ownership::Unrecorded
    } else {
        Ownership::Others(
            records
                .iter()
                .map(|k| (k.access_key_id.clone(), k.name.clone()))
                .collect(),
        )
    }
}

/// "owner `x` (ownership key GK…)", for errors.
pub fn describe_others(others: &[(String, String)]) -> String {
    others
        .iter()
        .map(|(id, name)| {
            let who = name
                .strip_prefix(OWNERSHIP_KEY_PREFIX)
                .unwrap_or(name.as_str());
            format!("`{who}` (ownership key {id})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes the ownership key (or finds it, on a retry); its secret is random
/// and never kept.
pub async fn ensure_key(admin: &Admin, id: &str, name: &str) -> Result<()> {
    let secret = random_secret();
    let body = json!({"accessKeyId": id, "secretAccessKey": secret.expose_secret(), "name": name});
    match admin
        .call::<Value>(Method::POST, "ImportKey", &[], Some(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code.as_deref() == Some("KeyAlreadyExists") => {
            let existing: Option<KeyInfo> = admin.key(id, false).await?;
            match existing {
                Some(k) if k.name == name => Ok(()),
                Some(k) => Err(Error::conflict(format!(
                    "the ownership key {id} exists but is named {:?}, not {name:?}",
                    k.name
                ))
                .with_hint("something renamed it; rename it back with `garage key rename`")),
                None => Err(Error::internal(format!(
                    "key {id} exists and yet cannot be read"
                ))),
            }
        }
        Err(e) => Err(e.error),
    }
}

/// Records `(key_id)` as the bucket's owner: its local alias `alias`.
pub async fn claim(
    admin: &Admin,
    bucket_id: &str,
    key_id: &str,
    key_name: &str,
    alias: &str,
) -> Result<()> {
    ensure_key(admin, key_id, key_name).await?;
    let body = json!({"bucketId": bucket_id, "accessKeyId": key_id, "localAlias": alias});
    admin
        .call::<Value>(Method::POST, "AddBucketAlias", &[], Some(&body))
        .await
        .map_err(|e| e.error.context("recording the bucket's owner"))?;
    Ok(())
}

/// Deletes an ownership key (its alias goes with it); gone already is fine.
pub async fn release(admin: &Admin, key_id: &str) -> Result<()> {
    match admin
        .call::<Value>(Method::POST, "DeleteKey", &[("id", key_id)], None)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code.as_deref() == Some("NoSuchAccessKey") => Ok(()),
        Err(e) => Err(e.error.context("removing the bucket's ownership record")),
    }
}
