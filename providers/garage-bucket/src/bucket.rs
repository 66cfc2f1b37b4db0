//! Resource type `bucket`: a Garage bucket with its global alias, quotas,
//! website access, CORS rules, and what happens to its data on delete.
//!
//! Every bucket it makes carries an ownership record (a local alias of an
//! ownership key derived from `owner` and `name`, see [`crate::owner`]).
//! Create adopts an existing bucket of the same global alias only when that
//! record is this resource's (a retry after a crash), or with
//! `takeOver = true`; otherwise it is an error saying whose it looks like.
//! Update and delete refuse a bucket that now carries only someone else's
//! record. Delete either keeps the data (refusing to delete a non-empty
//! bucket) or purges it through S3, including unfinished multipart uploads.

use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{CreateContext, Drift, Error, ReadOutcome, Recorded, Resource, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::garage::{Admin, ApiCorsRule, BucketInfo, BucketRef, Garage, Quotas};
use crate::owner::{self, Ownership};

/// Inputs of `bucket`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketInputs {
    /// How to reach Garage.
    pub garage: Garage,
    /// The bucket's global alias: the name S3 clients use. 3 to 63
    /// characters: lowercase letters, digits, `-` and `.`. Changing it
    /// renames the bucket (the data stays).
    pub name: String,
    /// Size limit in bytes; unset means unlimited.
    #[serde(default)]
    pub max_size: Option<u64>,
    /// Object count limit; unset means unlimited.
    #[serde(default)]
    pub max_objects: Option<u64>,
    /// Serve the bucket's objects publicly through Garage's `[s3_web]`
    /// endpoint. Unset: no website access.
    #[serde(default)]
    pub website: Option<Website>,
    /// CORS rules, for browsers fetching objects from other origins (e.g.
    /// PeerTube's player). Empty: no CORS.
    #[serde(default)]
    pub cors_rules: Vec<CorsRule>,
    /// What deleting the resource does with the bucket's data: `keep`
    /// refuses to delete a bucket that still holds objects (the data stays,
    /// and the error says so); `purge` deletes every object and unfinished
    /// upload, then the bucket.
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Whose bucket this is, e.g. `fediversity:alice-fedi-test`: recorded
    /// on the bucket (an ownership key named after it), and shown when
    /// another resource finds the bucket. Deployments sharing a Garage need
    /// distinct owners. Changing it moves the record.
    #[serde(default)]
    pub owner: String,
    /// Manage a bucket of this name that exists without this resource's
    /// ownership record (made by hand, by another tool, or by another
    /// owner): create then adopts it, records this resource as its owner
    /// (removing other owners' records) and applies the declared settings;
    /// update and delete act on it even if another owner took it over
    /// since. Set it for one apply, deliberately.
    #[serde(default)]
    pub take_over: bool,
}

/// Website access settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Website {
    /// The object served for a directory (a key ending in `/`).
    #[serde(default = "default_index")]
    pub index_document: String,
    /// The object served when a key is not found.
    #[serde(default)]
    pub error_document: Option<String>,
}

fn default_index() -> String {
    "index.html".to_string()
}

/// One CORS rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsRule {
    /// Origins allowed, e.g. `["https://video.example.org"]` or `["*"]`.
    pub allowed_origins: Vec<String>,
    /// HTTP methods allowed: `GET`, `PUT`, `POST`, `DELETE`, `HEAD`.
    pub allowed_methods: Vec<String>,
    /// Request headers allowed (`*` for any).
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long browsers may cache the preflight answer, in seconds.
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
}

/// What deleting does with the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Keep the data: deleting a non-empty bucket is refused.
    #[default]
    Keep,
    /// Delete all objects and unfinished uploads, then the bucket.
    Purge,
}

/// Outputs of `bucket`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketOutputs {
    /// Garage's id of the bucket.
    pub bucket_id: String,
    /// The global alias (S3 bucket name).
    pub name: String,
    /// The S3 endpoint to configure applications with.
    pub s3_endpoint: String,
    /// The S3 region.
    pub region: String,
    /// The public URL of the website, when website access is on and
    /// `garage.webEndpoint` is set.
    #[serde(default)]
    pub website_url: Option<String>,
}

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

impl BucketInputs {
    fn validate(&self) -> Result<()> {
        self.garage.validate()?;
        validate_bucket_name("name", &self.name)?;
        owner::validate_owner(&self.owner)?;
        if let Some(website) = &self.website
            && (website.index_document.is_empty() || website.index_document.ends_with('/'))
        {
            return Err(Error::invalid_input(
                "website.indexDocument",
                "must name an object, such as index.html",
            ));
        }
        for (i, rule) in self.cors_rules.iter().enumerate() {
            if rule.allowed_origins.is_empty() {
                return Err(Error::invalid_input(
                    format!("corsRules[{i}].allowedOrigins"),
                    "is empty",
                )
                .with_hint(
                    "list the origins allowed, e.g. [ \"https://app.example.org\" ] or [ \"*\" ]",
                ));
            }
            if rule.allowed_methods.is_empty() {
                return Err(Error::invalid_input(
                    format!("corsRules[{i}].allowedMethods"),
                    "is empty",
                )
                .with_hint("list the methods allowed, e.g. [ \"GET\" \"HEAD\" ]"));
            }
            for method in &rule.allowed_methods {
                if !METHODS.contains(&method.as_str()) {
                    return Err(Error::invalid_input(
                        format!("corsRules[{i}].allowedMethods"),
                        format!("{method:?} is not a method S3 CORS allows"),
                    )
                    .with_hint(format!("use some of {}", METHODS.join(", "))));
                }
            }
        }
        Ok(())
    }

    /// The `UpdateBucket` body that makes the bucket exactly as declared.
    fn settings(&self) -> Value {
        let website = match &self.website {
            Some(website) => json!({
                "enabled": true,
                "indexDocument": website.index_document,
                "errorDocument": website.error_document,
            }),
            None => json!({"enabled": false}),
        };
        // maxSize and maxObjects are replaced together: always send both.
        json!({
            "quotas": {"maxSize": self.max_size, "maxObjects": self.max_objects},
            "websiteAccess": website,
            "corsRules": self.api_cors_rules(),
        })
    }

    fn api_cors_rules(&self) -> Vec<ApiCorsRule> {
        self.cors_rules
            .iter()
            .map(|rule| ApiCorsRule {
                id: None,
                max_age_seconds: rule.max_age_seconds.map(i64::from),
                allowed_origins: rule.allowed_origins.clone(),
                allowed_methods: rule.allowed_methods.clone(),
                allowed_headers: rule.allowed_headers.clone(),
                expose_headers: rule.expose_headers.clone(),
            })
            .collect()
    }

    fn outputs(&self, info: &BucketInfo) -> BucketOutputs {
        BucketOutputs {
            bucket_id: info.id.clone(),
            name: self.name.clone(),
            s3_endpoint: self.garage.s3_endpoint.clone(),
            region: self.garage.region.clone(),
            website_url: self
                .website
                .as_ref()
                .and_then(|_| self.garage.website_url(&self.name)),
        }
    }
}

/// S3 bucket naming rules (as AWS documents them, and Garage's own),
/// checked before anything is sent.
pub fn validate_bucket_name(field: &str, name: &str) -> Result<()> {
    let problem = bucket_name_problem(name);
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::invalid_input(
            field,
            format!("{name:?} is not a valid bucket name: {problem}"),
        )
        .with_hint(
            "use 3 to 63 characters: lowercase letters, digits, `-` and `.`, starting and ending \
             with a letter or digit, not an IP address, not starting with `xn--`, `sthree-` or \
             `amzn-s3-demo-`, not ending with `-s3alias`, `--ol-s3`, `.mrap`, `--x-s3` or \
             `--table-s3`",
        )),
    }
}

fn bucket_name_problem(name: &str) -> Option<&'static str> {
    const PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    if !(3..=63).contains(&name.len()) {
        Some("it must be 3 to 63 characters long")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        Some("only lowercase letters, digits, `-` and `.` are allowed")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("it must start and end with a letter or digit")
    } else if name.contains("..") {
        Some("it must not contain two adjacent periods")
    } else if name.parse::<std::net::IpAddr>().is_ok() {
        Some("it must not be formatted as an IP address")
    } else if PREFIXES.iter().any(|p| name.starts_with(p)) || name.contains(".xn--") {
        Some("S3 reserves this prefix")
    } else if SUFFIXES.iter().any(|s| name.ends_with(s)) {
        Some("S3 reserves this suffix")
    } else {
        None
    }
}

/// The `bucket` resource type.
#[derive(Debug, Default)]
pub struct Bucket;

impl Resource for Bucket {
    type Inputs = BucketInputs;
    type Outputs = BucketOutputs;

    const TYPE: &'static str = "bucket";
    const DESCRIPTION: &'static str = "A Garage bucket: global alias, quotas, website access, CORS rules, \
        and whether deleting it keeps or purges its data. It carries a record of its owner; an \
        existing bucket with the same alias is adopted only when it carries this resource's record \
        (a retry after a crash) or with `takeOver = true`, never silently.";
    const REQUIRE_STATE: bool = true;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(&self, inputs: BucketInputs, _: CreateContext) -> Result<BucketOutputs> {
        inputs.validate()?;
        let admin = Admin::connect(&inputs.garage)?;
        let (owner_id, owner_name) = owner::ownership_key(&admin, &inputs.owner, &inputs.name);
        owner::ensure_key(&admin, &owner_id, &owner_name).await?;
        // Create first and look only when that fails: each admin call costs
        // tens of milliseconds, and most creates are of new buckets. The
        // ownership record comes in the same request.
        let created: Result<BucketInfo, _> = admin
            .call(
                Method::POST,
                "CreateBucket",
                &[],
                Some(&json!({
                    "globalAlias": inputs.name,
                    "localAlias": {"accessKeyId": owner_id, "alias": inputs.name},
                })),
            )
            .await;
        let info = match created {
            Ok(info) => {
                tracing::info!(bucket = %inputs.name, id = %info.id, "created the bucket");
                info
            }
            Err(e) if e.code.as_deref() == Some("BucketAlreadyExists") => {
                let existing = admin
                    .bucket(BucketRef::Alias(&inputs.name))
                    .await?
                    .ok_or(e.error)?;
                match owner::ownership(&existing, &owner_id) {
                    // A retry after a crash: the record is ours.
                    Ownership::Ours => {
                        tracing::info!(bucket = %inputs.name, id = %existing.id, "adopting the bucket this resource made");
                        existing
                    }
                    _ if inputs.take_over => {
                        take_over(&admin, &inputs, existing, &owner_id, &owner_name).await?
                    }
                    other => return Err(not_ours(&inputs.name, &existing, &other, "create")),
                }
            }
            Err(e) => return Err(e.error),
        };
        fedi_protocol::fault::point("after-bucket-create");
        let id = info.id.clone();
        let info = apply_settings(&admin, &id, &inputs, info).await?;
        Ok(inputs.outputs(&info))
    }

    async fn update(
        &self,
        inputs: BucketInputs,
        previous: Recorded<BucketInputs, BucketOutputs>,
    ) -> Result<BucketOutputs> {
        inputs.validate()?;
        let admin = Admin::connect(&inputs.garage)?;
        let id = &previous.outputs.bucket_id;
        let info = admin.bucket(BucketRef::Id(id)).await?.ok_or_else(|| {
            Error::not_found(format!(
                "bucket `{}` ({id}) no longer exists in Garage",
                previous.outputs.name
            ))
            .with_hint("it was deleted outside this deployment; remove the resource from the state to create it anew")
        })?;
        let (old_id, _) =
            owner::ownership_key(&admin, &previous.inputs.owner, &previous.inputs.name);
        let mut info = check_recorded(&admin, &previous, &inputs, info, &old_id, "update").await?;
        if !info.global_aliases.contains(&inputs.name) {
            info = admin
                .call::<BucketInfo>(
                    Method::POST,
                    "AddBucketAlias",
                    &[],
                    Some(&json!({"bucketId": id, "globalAlias": inputs.name})),
                )
                .await
                .map_err(|e| {
                    e.error.context(format!(
                        "renaming bucket `{}` to `{}`",
                        previous.outputs.name, inputs.name
                    ))
                })?;
            tracing::info!(from = %previous.outputs.name, to = %inputs.name, "renamed the bucket");
        }
        if previous.outputs.name != inputs.name
            && info.global_aliases.contains(&previous.outputs.name)
        {
            let old = json!({"bucketId": id, "globalAlias": previous.outputs.name});
            info = admin
                .call(Method::POST, "RemoveBucketAlias", &[], Some(&old))
                .await?;
        }
        // A new owner or name: the record moves with it.
        let (new_id, new_name) = owner::ownership_key(&admin, &inputs.owner, &inputs.name);
        if new_id != old_id {
            owner::claim(&admin, id, &new_id, &new_name, &inputs.name).await?;
            owner::release(&admin, &old_id).await?;
            tracing::info!(bucket = %inputs.name, owner = %inputs.owner, "moved the ownership record");
        }
        let info = apply_settings(&admin, id, &inputs, info).await?;
        Ok(inputs.outputs(&info))
    }

    async fn delete(&self, current: Recorded<BucketInputs, BucketOutputs>) -> Result<()> {
        let inputs = &current.inputs;
        let admin = Admin::connect(&inputs.garage)?;
        let id = &current.outputs.bucket_id;
        let (owner_id, _) = owner::ownership_key(&admin, &inputs.owner, &inputs.name);
        let Some(info) = admin.bucket(BucketRef::Id(id)).await? else {
            tracing::info!(bucket = %current.outputs.name, "the bucket is already gone");
            return owner::release(&admin, &owner_id).await;
        };
        let info = check_recorded(&admin, &current, inputs, info, &owner_id, "delete").await?;
        match inputs.on_delete {
            OnDelete::Keep => {
                if info.objects > 0 || info.unfinished_multipart_uploads > 0 {
                    return Err(Error::conflict(format!(
                        "bucket `{}` still holds {} objects ({} bytes) and {} unfinished uploads; \
                         with onDelete = \"keep\" its data stays, so the bucket is not deleted",
                        current.outputs.name, info.objects, info.bytes, info.unfinished_multipart_uploads
                    ))
                    .with_hint("empty the bucket yourself, or set `onDelete = \"purge\"` (and apply) to delete its data with it"));
                }
            }
            OnDelete::Purge => crate::purge::purge(&admin, &inputs.garage, &info).await?,
        }
        match admin
            .call::<Value>(Method::POST, "DeleteBucket", &[("id", id)], None)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code.as_deref() == Some("NoSuchBucket") => {}
            Err(e) if e.code.as_deref() == Some("BucketNotEmpty") => {
                return Err(e
                    .error
                    .with_hint("objects were written while deleting; run the delete again"));
            }
            Err(e) => return Err(e.error),
        }
        owner::release(&admin, &owner_id).await?;
        tracing::info!(bucket = %current.outputs.name, id = %id, "deleted the bucket");
        Ok(())
    }

    async fn read(
        &self,
        current: Recorded<BucketInputs, BucketOutputs>,
    ) -> Result<ReadOutcome<BucketOutputs>> {
        let inputs = &current.inputs;
        let admin = Admin::connect(&inputs.garage)?;
        let Some(info) = admin
            .bucket(BucketRef::Id(&current.outputs.bucket_id))
            .await?
        else {
            return Ok(ReadOutcome::Gone);
        };
        Ok(ReadOutcome::Exists {
            outputs: inputs.outputs(&info),
            drift: drift(inputs, &info),
        })
    }
}

/// The error for a bucket that exists but is not provably this resource's.
fn not_ours(name: &str, info: &BucketInfo, ownership: &Ownership, action: &str) -> Error {
    let whose = match ownership {
        Ownership::Others(others) => format!(
            "it is recorded as the bucket of {}",
            owner::describe_others(others)
        ),
        _ => {
            "it carries no ownership record of fedi-garage-bucket (made by hand, by another tool, \
              or by a version of this provider before ownership records)"
                .to_string()
        }
    };
    Error::conflict(format!(
        "bucket `{name}` (id {}) exists in Garage and is not this resource's: {whose}; refusing to {action} it",
        info.id
    ))
    .with_field("name")
    .with_hint(
        "choose another `name`; or, if this resource is to manage that bucket from now on (its \
         quotas, website and CORS become the declared ones, and deleting the resource deletes it), \
         set `takeOver = true` for one apply",
    )
}

/// Makes an existing bucket this resource's: its record added, other
/// owners' records removed.
async fn take_over(
    admin: &Admin,
    inputs: &BucketInputs,
    existing: BucketInfo,
    owner_id: &str,
    owner_name: &str,
) -> Result<BucketInfo> {
    if let Ownership::Others(others) = owner::ownership(&existing, owner_id) {
        for (other, name) in others {
            tracing::warn!(bucket = %inputs.name, key = %other, name = %name, "takeOver: removing another owner's record");
            owner::release(admin, &other).await?;
        }
    }
    owner::claim(admin, &existing.id, owner_id, owner_name, &inputs.name).await?;
    tracing::warn!(bucket = %inputs.name, id = %existing.id, "took the existing bucket over (takeOver = true)");
    Ok(admin
        .bucket(BucketRef::Id(&existing.id))
        .await?
        .unwrap_or(existing))
}

/// Before an update or delete: the bucket at the recorded id must carry
/// this resource's record. Bucket ids are random and never reused, so one
/// without any record was made by this resource (before records existed,
/// or its record was removed) and gets it back; one carrying only another
/// owner's record was taken over since, and is refused without `takeOver`.
async fn check_recorded(
    admin: &Admin,
    recorded: &Recorded<BucketInputs, BucketOutputs>,
    inputs: &BucketInputs,
    info: BucketInfo,
    owner_id: &str,
    action: &str,
) -> Result<BucketInfo> {
    let (_, owner_name) =
        owner::ownership_key(admin, &recorded.inputs.owner, &recorded.inputs.name);
    match owner::ownership(&info, owner_id) {
        Ownership::Ours => Ok(info),
        Ownership::Others(_) if inputs.take_over => {
            take_over(admin, &recorded.inputs, info, owner_id, &owner_name).await
        }
        other @ Ownership::Others(_) => {
            Err(not_ours(&recorded.outputs.name, &info, &other, action))
        }
        Ownership::Unrecorded => {
            owner::claim(
                admin,
                &info.id,
                owner_id,
                &owner_name,
                &recorded.inputs.name,
            )
            .await?;
            tracing::info!(bucket = %recorded.outputs.name, "recorded the bucket's owner");
            Ok(admin.bucket(BucketRef::Id(&info.id)).await?.unwrap_or(info))
        }
    }
}

/// Sets quotas, website and CORS as declared, unless they already are.
async fn apply_settings(
    admin: &Admin,
    id: &str,
    inputs: &BucketInputs,
    info: BucketInfo,
) -> Result<BucketInfo> {
    if drift(inputs, &info).is_empty() {
        return Ok(info);
    }
    admin
        .call(
            Method::POST,
            "UpdateBucket",
            &[("id", id)],
            Some(&inputs.settings()),
        )
        .await
        .map_err(|e| {
            e.error
                .context(format!("configuring bucket `{}`", inputs.name))
        })
}

/// How the bucket differs from the inputs.
fn drift(inputs: &BucketInputs, info: &BucketInfo) -> Vec<Drift> {
    let mut drift = Vec::new();
    let mut push = |property: &str, message: String| {
        drift.push(Drift {
            property: property.into(),
            message,
        })
    };
    if !info.global_aliases.contains(&inputs.name) {
        push(
            "name",
            format!("the bucket's global aliases are {:?}", info.global_aliases),
        );
    }
    let declared = Quotas {
        max_size: inputs.max_size,
        max_objects: inputs.max_objects,
    };
    if info.quotas != declared {
        push(
            "maxSize",
            format!("quotas are {:?}, declared {:?}", info.quotas, declared),
        );
    }
    match (&inputs.website, info.website_access, &info.website_config) {
        (None, true, _) => push("website", "website access is on, declared off".into()),
        (Some(_), false, _) => push("website", "website access is off, declared on".into()),
        (Some(website), true, Some(config))
            if config.index_document != website.index_document
                || config.error_document != website.error_document =>
        {
            push(
                "website",
                format!(
                    "documents are index {:?} / error {:?}, declared {:?} / {:?}",
                    config.index_document,
                    config.error_document,
                    website.index_document,
                    website.error_document
                ),
            )
        }
        _ => {}
    }
    let actual = info.cors_rules.clone().unwrap_or_default();
    let actual: Vec<ApiCorsRule> = actual
        .into_iter()
        .map(|r| ApiCorsRule { id: None, ..r })
        .collect();
    if actual != inputs.api_cors_rules() {
        push(
            "corsRules",
            format!(
                "{} CORS rules differ from the {} declared",
                actual.len(),
                inputs.cors_rules.len()
            ),
        );
    }
    drift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for good in [
            "abc",
            "media-1",
            "peertube.videos",
            "a--b",
            "x---0123456789abcdef",
        ] {
            validate_bucket_name("name", good).unwrap();
        }
        for bad in [
            "ab",
            "Media",
            "-x-",
            "a..b",
            "under_score",
            &"x".repeat(64),
            "192.168.5.4",
            "xn--bcher-kva",
            "a.xn--bcher-kva",
            "sthree-media",
            "amzn-s3-demo-media",
            "media-s3alias",
            "media--ol-s3",
            "media.mrap",
            "media--x-s3",
            "media--table-s3",
        ] {
            let error = validate_bucket_name("name", bad).unwrap_err();
            assert_eq!(error.field(), Some("name"), "{bad}");
        }
    }
}
