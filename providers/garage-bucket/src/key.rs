//! Resource type `key`: a Garage access key with exact permissions on
//! buckets, its secret written to a file (mode 0600) on the deploying
//! machine.
//!
//! The access key id is derived from the key's `owner` and `name` with the
//! hosting provider's secret (`garage.keyIdSecret`, HMAC-SHA256) and the key
//! is made with `ImportKey`, so a create retried after a crash finds the key
//! the crashed run made instead of leaving an orphan, and nobody without the
//! secret can plant a key there. A key found at that id under another name
//! is not adopted without `takeOver`; update and delete compare the key's
//! name with the recorded one before acting. The secret is never an
//! output and never regenerated: Garage keeps it, and a missing secret file
//! is fetched again from Garage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedi_protocol::files::{remove_if_exists, write_private_atomic};
use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{
    CreateContext, Drift, Error, ExposeSecret, ReadOutcome, Recorded, Resource, Result,
    SecretString,
};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bucket::validate_bucket_name;
use crate::garage::{
    Admin, BucketRef, Garage, KeyInfo, Permissions, random_secret, s3_client, short_tag,
};
use crate::owner::validate_owner;

/// Inputs of `key`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyInputs {
    /// How to reach Garage.
    pub garage: Garage,
    /// The key's name in Garage. The access key id is derived from it and
    /// `owner` with the hosting provider's secret (so that a retried create
    /// finds the key); changing the name later only renames the key.
    pub name: String,
    /// Whose key this is, e.g. `fediversity:alice-fedi-test`; part of the
    /// access key id's derivation. Deployments sharing a Garage need
    /// distinct owners.
    #[serde(default)]
    pub owner: String,
    /// Manage a key that is not provably this resource's: on create, the
    /// key at this resource's id under another name (it is then renamed and
    /// its permissions made exact); on update and delete, a key whose name
    /// is no longer the recorded one. Set it for one apply, deliberately.
    #[serde(default)]
    pub take_over: bool,
    /// The key's permissions, exactly: permissions on buckets not listed
    /// here, and flags not set, are removed.
    #[serde(default)]
    pub permissions: Vec<BucketPermission>,
    /// Whether the key may create buckets.
    #[serde(default)]
    pub allow_create_bucket: bool,
    /// Where the secret access key is written on the deploying machine
    /// (mode 0600, atomically; missing directories are created 0700). Hand
    /// it to services as a key file (e.g. `nixos-config` secrets), never
    /// through the Nix store.
    pub secret_key_path: PathBuf,
    /// After each create or update, prove the permissions through the S3
    /// API: with read and write, put, get and delete a probe object; with
    /// read only, list the bucket. A wrong permission then fails the
    /// deployment rather than the service later.
    #[serde(default)]
    pub verify: bool,
}

/// Permissions on one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketPermission {
    /// The bucket: its id (a `bucket` resource's `bucketId` output, which
    /// saves a lookup) or its global alias (its `name` output).
    pub bucket: String,
    /// May read objects.
    #[serde(default)]
    pub read: bool,
    /// May write and delete objects.
    #[serde(default)]
    pub write: bool,
    /// May change the bucket's settings (website, CORS) through S3.
    #[serde(default)]
    pub owner: bool,
}

/// Outputs of `key`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyOutputs {
    /// The access key id (`GK...`).
    pub access_key_id: String,
    /// The key's name.
    pub name: String,
    /// Absolute path of the file holding the secret access key.
    pub secret_key_path: PathBuf,
}

impl KeyInputs {
    fn validate(&self) -> Result<()> {
        self.garage.validate()?;
        validate_owner(&self.owner)?;
        if self.name.trim().is_empty() {
            return Err(Error::invalid_input("name", "is empty")
                .with_hint("name the key, e.g. \"mastodon-example-org\""));
        }
        let mut seen = BTreeMap::new();
        for (i, permission) in self.permissions.iter().enumerate() {
            let field = format!("permissions[{i}].bucket");
            if !is_bucket_id(&permission.bucket) {
                validate_bucket_name(&field, &permission.bucket)?;
            }
            if let Some(first) = seen.insert(permission.bucket.clone(), i) {
                return Err(Error::invalid_input(
                    field,
                    format!(
                        "bucket `{}` is listed twice (also at permissions[{first}])",
                        permission.bucket
                    ),
                )
                .with_hint("list each bucket once, with all its flags"));
            }
            if !(permission.read || permission.write || permission.owner) {
                return Err(
                    Error::invalid_input(format!("permissions[{i}]"), "grants nothing")
                        .with_hint("set read, write or owner, or remove the entry"),
                );
            }
        }
        if self.secret_key_path.starts_with("/nix/store") {
            return Err(Error::invalid_input(
                "secretKeyPath",
                "is in the Nix store, which every local user can read",
            )
            .with_hint("choose a path such as /var/lib/deployer/keys/<name>"));
        }
        Ok(())
    }

    fn secret_path(&self) -> Result<PathBuf> {
        if self.secret_key_path.is_absolute() {
            return Ok(self.secret_key_path.clone());
        }
        Ok(std::env::current_dir()
            .map_err(|e| Error::internal("cannot determine the working directory").with_source(e))?
            .join(&self.secret_key_path))
    }

    /// Bucket ids and the exact permissions wanted on each.
    async fn desired(&self, admin: &Admin) -> Result<BTreeMap<String, (String, Permissions)>> {
        let mut desired = BTreeMap::new();
        for (i, permission) in self.permissions.iter().enumerate() {
            let flags = Permissions {
                read: permission.read,
                write: permission.write,
                owner: permission.owner,
            };
            if is_bucket_id(&permission.bucket) {
                // Checked by Garage when permissions are granted.
                desired.insert(
                    permission.bucket.clone(),
                    (permission.bucket.clone(), flags),
                );
                continue;
            }
            let info = admin.bucket(BucketRef::Alias(&permission.bucket)).await?.ok_or_else(|| {
                Error::not_found(format!("bucket `{}` does not exist in Garage", permission.bucket))
                    .with_field(format!("permissions[{i}].bucket"))
                    .with_hint("create it first: make this input refer to the bucket resource's `name` output, so that NixOps4 orders them")
            })?;
            desired.insert(info.id, (permission.bucket.clone(), flags));
        }
        Ok(desired)
    }
}

/// The `key` resource type.
#[derive(Debug, Default)]
pub struct Key;

impl Resource for Key {
    type Inputs = KeyInputs;
    type Outputs = KeyOutputs;

    const TYPE: &'static str = "key";
    const DESCRIPTION: &'static str = "A Garage access key with exact permissions on buckets and the \
        bucket-creation right. Its secret is written to a file (mode 0600) on the deploying machine, \
        never output; a missing file is fetched again from Garage. Its id is derived from `owner` and \
        `name` with the hosting provider's secret; a key found there under another name is not \
        adopted without `takeOver = true`.";
    const REQUIRE_STATE: bool = true;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(&self, inputs: KeyInputs, _: CreateContext) -> Result<KeyOutputs> {
        inputs.validate()?;
        let admin = Admin::connect(&inputs.garage)?;
        let id = admin.derive_key_id("key", &[&inputs.owner, &inputs.name]);
        let info = import(&admin, &id, &inputs.name).await?;
        if info.name != inputs.name && !inputs.take_over {
            return Err(not_ours(&id, &info.name, &inputs.name, "adopt"));
        }
        fedi_protocol::fault::point("after-key-create");
        check_secret_file(&inputs, &info)?;
        converge(&admin, &inputs, info).await
    }

    async fn update(
        &self,
        inputs: KeyInputs,
        previous: Recorded<KeyInputs, KeyOutputs>,
    ) -> Result<KeyOutputs> {
        inputs.validate()?;
        let admin = Admin::connect(&inputs.garage)?;
        let id = &previous.outputs.access_key_id;
        let info = match admin.key(id, true).await? {
            Some(info) => info,
            None => {
                tracing::warn!(key = %id, "the key was deleted outside this deployment; making it again with a new secret");
                import(&admin, id, &inputs.name).await?
            }
        };
        if info.name != previous.outputs.name && info.name != inputs.name && !inputs.take_over {
            return Err(not_ours(id, &info.name, &previous.outputs.name, "update"));
        }
        let outputs = converge(&admin, &inputs, info).await?;
        if outputs.secret_key_path != previous.outputs.secret_key_path {
            remove_if_exists(&previous.outputs.secret_key_path).map_err(|e| {
                Error::internal(format!(
                    "cannot remove the old secret file `{}`",
                    previous.outputs.secret_key_path.display()
                ))
                .with_source(e)
            })?;
        }
        Ok(outputs)
    }

    async fn delete(&self, current: Recorded<KeyInputs, KeyOutputs>) -> Result<()> {
        let admin = Admin::connect(&current.inputs.garage)?;
        let id = &current.outputs.access_key_id;
        let path = &current.outputs.secret_key_path;
        match admin.key(id, true).await? {
            Some(info) => {
                if info.name != current.outputs.name && !current.inputs.take_over {
                    return Err(not_ours(id, &info.name, &current.outputs.name, "delete"));
                }
                // The secret file goes only if it still holds this key's
                // secret: the path may hold another key's by now.
                let wanted = info
                    .secret_access_key
                    .as_ref()
                    .map(|s| format!("{}\n", s.expose_secret()));
                let holds_ours =
                    std::fs::read_to_string(path).is_ok_and(|have| Some(have) == wanted);
                match admin
                    .call::<Value>(Method::POST, "DeleteKey", &[("id", id)], None)
                    .await
                {
                    Ok(_) => tracing::info!(key = %id, "deleted the key"),
                    Err(e) if e.code.as_deref() == Some("NoSuchAccessKey") => {}
                    Err(e) => return Err(e.error),
                }
                if !holds_ours {
                    if path.exists() {
                        tracing::warn!(path = %path.display(), "the secret file no longer holds this key's secret; leaving it");
                    }
                    return Ok(());
                }
            }
            None => tracing::info!(key = %id, "the key is already gone"),
        }
        remove_if_exists(path).map_err(|e| {
            Error::internal(format!("cannot remove `{}`", path.display())).with_source(e)
        })
    }

    async fn read(
        &self,
        current: Recorded<KeyInputs, KeyOutputs>,
    ) -> Result<ReadOutcome<KeyOutputs>> {
        let inputs = &current.inputs;
        let admin = Admin::connect(&inputs.garage)?;
        let Some(info) = admin.key(&current.outputs.access_key_id, false).await? else {
            return Ok(ReadOutcome::Gone);
        };
        let mut drift = Vec::new();
        if info.name != inputs.name {
            drift.push(Drift {
                property: "name".into(),
                message: format!("the key is named {:?}", info.name),
            });
        }
        if info.permissions.create_bucket != inputs.allow_create_bucket {
            drift.push(Drift {
                property: "allowCreateBucket".into(),
                message: format!(
                    "the key {} create buckets",
                    if info.permissions.create_bucket {
                        "may"
                    } else {
                        "may not"
                    }
                ),
            });
        }
        let desired = match inputs.desired(&admin).await {
            Ok(desired) => desired,
            Err(e) => {
                drift.push(Drift {
                    property: "permissions".into(),
                    message: e.to_string(),
                });
                BTreeMap::new()
            }
        };
        for bucket in &info.buckets {
            let wanted = desired.get(&bucket.id).map(|(_, p)| *p).unwrap_or_default();
            if wanted != bucket.permissions {
                let alias = bucket
                    .global_aliases
                    .first()
                    .cloned()
                    .unwrap_or_else(|| bucket.id.clone());
                drift.push(Drift {
                    property: "permissions".into(),
                    message: format!(
                        "on bucket `{alias}` the key has {:?}, declared {wanted:?}",
                        bucket.permissions
                    ),
                });
            }
        }
        for (id, (alias, wanted)) in &desired {
            if !info.buckets.iter().any(|b| &b.id == id) {
                drift.push(Drift {
                    property: "permissions".into(),
                    message: format!(
                        "the key has no permission on bucket `{alias}`, declared {wanted:?}"
                    ),
                });
            }
        }
        if !current.outputs.secret_key_path.exists() {
            drift.push(Drift {
                property: "secretKeyPath".into(),
                message: "the secret file is missing; the next update fetches it again from Garage"
                    .into(),
            });
        }
        Ok(ReadOutcome::Exists {
            outputs: outputs(&info, &current.outputs.secret_key_path),
            drift,
        })
    }
}

/// Makes key `id` with a new random secret, or, when it exists already (a
/// retry after a crash), takes it as it is. Importing first and looking
/// only on conflict saves an admin call on every fresh create.
async fn import(admin: &Admin, id: &str, name: &str) -> Result<KeyInfo> {
    let secret = random_secret();
    let body = json!({"accessKeyId": id, "secretAccessKey": secret.expose_secret(), "name": name});
    match admin
        .call::<KeyInfo>(Method::POST, "ImportKey", &[], Some(&body))
        .await
    {
        Ok(mut info) => {
            tracing::info!(key = %id, name, "created the key");
            info.secret_access_key = Some(secret);
            Ok(info)
        }
        Err(e) if e.code.as_deref() == Some("KeyAlreadyExists") => {
            let existing = admin.key(id, true).await?.ok_or_else(|| {
                Error::internal(format!("key {id} exists and yet cannot be read"))
            })?;
            tracing::info!(key = %id, name = %existing.name, "adopting the existing key");
            Ok(existing)
        }
        Err(e) => Err(e.error),
    }
}

/// The error for a key at this resource's id that is not provably its own.
fn not_ours(id: &str, found: &str, expected: &str, action: &str) -> Error {
    Error::conflict(format!(
        "the Garage key {id} is named {found:?}, not {expected:?}: it is not provably this \
         resource's (another resource of this owner named it so, or someone renamed it); refusing \
         to {action} it"
    ))
    .with_field("name")
    .with_hint(
        "if it is this resource's key and the new name is wrong, rename it back (`garage key \
         rename`); to manage it as this resource from now on (renamed, permissions made exact), \
         set `takeOver = true` for one apply; otherwise give this resource another `name` or \
         `owner`",
    )
}

/// On create: a secret file already at `secretKeyPath` that holds something
/// else than this key's secret belongs to someone else; it is not
/// overwritten unless `takeOver`.
fn check_secret_file(inputs: &KeyInputs, info: &KeyInfo) -> Result<()> {
    let path = inputs.secret_path()?;
    let Ok(have) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let ours = info
        .secret_access_key
        .as_ref()
        .is_some_and(|s| have == format!("{}\n", s.expose_secret()));
    if ours || inputs.take_over {
        return Ok(());
    }
    Err(Error::conflict(format!(
        "`{}` already exists and does not hold this key's secret: it looks like another key's \
         secret file; refusing to overwrite it",
        path.display()
    ))
    .with_field("secretKeyPath")
    .with_hint("choose another `secretKeyPath`; or remove the file, or set `takeOver = true`, if it is stale"))
}

/// Brings the key to the inputs: name, bucket-creation right, exact bucket
/// permissions, secret file; then verifies through S3 if asked.
async fn converge(admin: &Admin, inputs: &KeyInputs, info: KeyInfo) -> Result<KeyOutputs> {
    let id = info.access_key_id.clone();
    if info.name != inputs.name || info.permissions.create_bucket != inputs.allow_create_bucket {
        let flag = json!({"createBucket": true});
        let mut body = json!({"name": inputs.name});
        if inputs.allow_create_bucket {
            body["allow"] = flag;
        } else {
            body["deny"] = flag;
        }
        admin
            .call::<Value>(Method::POST, "UpdateKey", &[("id", &id)], Some(&body))
            .await?;
    }

    let desired = inputs.desired(admin).await?;
    let mut current: BTreeMap<String, Permissions> = info
        .buckets
        .iter()
        .map(|b| (b.id.clone(), b.permissions))
        .collect();
    for (bucket_id, (_, wanted)) in &desired {
        let have = current.remove(bucket_id).unwrap_or_default();
        let grant = wanted.minus(have);
        if grant.any() {
            admin
                .change_permissions(true, bucket_id, &id, grant)
                .await
                .map_err(|e| unknown_bucket(e, inputs, bucket_id))?;
        }
        let revoke = have.minus(*wanted);
        if revoke.any() {
            admin
                .change_permissions(false, bucket_id, &id, revoke)
                .await?;
        }
    }
    // What is left was not asked for: revoke it all.
    for (bucket_id, have) in current {
        if have.any() {
            admin
                .change_permissions(false, &bucket_id, &id, have)
                .await?;
        }
    }

    let path = inputs.secret_path()?;
    let secret = info
        .secret_access_key
        .as_ref()
        .ok_or_else(|| Error::internal("Garage did not return the key's secret"))?;
    write_secret(&path, secret)?;
    if inputs.verify {
        verify(admin, inputs, &id, secret, &desired).await?;
    }
    Ok(outputs(&info, &path))
}

fn outputs(info: &KeyInfo, path: &Path) -> KeyOutputs {
    KeyOutputs {
        access_key_id: info.access_key_id.clone(),
        name: info.name.clone(),
        secret_key_path: path.to_path_buf(),
    }
}

/// Writes the secret file unless it already holds exactly this secret.
fn write_secret(path: &Path, secret: &SecretString) -> Result<()> {
    let wanted = format!("{}\n", secret.expose_secret());
    if std::fs::read_to_string(path).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    write_private_atomic(path, wanted.as_bytes()).map_err(|e| {
        Error::invalid_input(
            "secretKeyPath",
            format!("cannot write the secret key to `{}`", path.display()),
        )
        .with_source(e)
        .with_hint("choose a path in a directory the deploying user can write")
    })?;
    tracing::info!(path = %path.display(), "wrote the secret key file");
    Ok(())
}

/// Whether `bucket` is a bucket id (64 hex digits) rather than an alias
/// (bucket names are at most 63 characters, so the two cannot be confused).
fn is_bucket_id(bucket: &str) -> bool {
    bucket.len() == 64 && bucket.chars().all(|c| c.is_ascii_hexdigit())
}

/// A grant on a bucket id that Garage does not know: name the input.
fn unknown_bucket(error: crate::garage::CallError, inputs: &KeyInputs, bucket_id: &str) -> Error {
    if error.code.as_deref() != Some("NoSuchBucket") {
        return error.error;
    }
    let index = inputs
        .permissions
        .iter()
        .position(|p| p.bucket == bucket_id)
        .unwrap_or_default();
    Error::not_found(format!("bucket {bucket_id} does not exist in Garage"))
        .with_field(format!("permissions[{index}].bucket"))
        .with_hint("use the `bucketId` output of an existing bucket resource")
}

/// Proves the permissions through the S3 API.
async fn verify(
    admin: &Admin,
    inputs: &KeyInputs,
    id: &str,
    secret: &SecretString,
    desired: &BTreeMap<String, (String, Permissions)>,
) -> Result<()> {
    let s3 = s3_client(&inputs.garage, id, secret);
    for (label, wanted) in desired.values() {
        // S3 addresses buckets by alias, not by id.
        let alias = &if is_bucket_id(label) {
            admin
                .bucket(BucketRef::Id(label))
                .await?
                .and_then(|b| b.global_aliases.into_iter().next())
                .ok_or_else(|| {
                    Error::invalid_input(
                        "verify",
                        format!("bucket {label} has no global alias to reach it by through S3"),
                    )
                    .with_hint("give the bucket a `name`, or set verify = false")
                })?
        } else {
            label.clone()
        };
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::permission_denied(format!("verification: key `{}` cannot {what} in bucket `{alias}` through S3: {e}", inputs.name))
                .with_field("verify")
                .with_hint("check the permissions and `garage.s3Endpoint`/`garage.region`; set verify = false to skip this check")
        };
        if wanted.read && wanted.write {
            let probe = format!(".fedi-probe-{}", short_tag(&format!("{id}{alias}")));
            let body = b"fedi-garage-bucket verification probe".to_vec();
            s3.put_object()
                .bucket(alias)
                .key(&probe)
                .body(body.clone().into())
                .send()
                .await
                .map_err(|e| failed("write", &aws_sdk_s3::error::DisplayErrorContext(e)))?;
            let got = s3
                .get_object()
                .bucket(alias)
                .key(&probe)
                .send()
                .await
                .map_err(|e| failed("read", &aws_sdk_s3::error::DisplayErrorContext(e)))?;
            let bytes = got
                .body
                .collect()
                .await
                .map_err(|e| failed("read", &e))?
                .into_bytes();
            s3.delete_object()
                .bucket(alias)
                .key(&probe)
                .send()
                .await
                .map_err(|e| failed("delete", &aws_sdk_s3::error::DisplayErrorContext(e)))?;
            if bytes.as_ref() != body.as_slice() {
                return Err(failed("read back what it wrote", &"the content differs"));
            }
        } else if wanted.read {
            s3.list_objects_v2()
                .bucket(alias)
                .max_keys(1)
                .send()
                .await
                .map_err(|e| failed("list", &aws_sdk_s3::error::DisplayErrorContext(e)))?;
        }
        tracing::info!(bucket = %alias, "verified the key's permissions through S3");
    }
    Ok(())
}
