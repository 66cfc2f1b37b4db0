//! Resource type `keypair`: an SSH key pair generated once and kept.
//!
//! The private key lives in a file on the deploying machine (mode 0600, in a
//! directory created 0700, written atomically); the NixOps4 state holds the
//! public key, its fingerprint and the file's path, not the private key
//! (unless `exposePrivateKey` asks for it).
//!
//! Lifecycle:
//! - create: generates a key, or adopts a key already at the path when it
//!   has the requested algorithm and size (a retry after a crash finds the
//!   key the crashed attempt wrote);
//! - update: keeps the key; rewrites the file when the comment, passphrase or
//!   path changed; generates a new key only when the algorithm, size or
//!   `rotationTrigger` changed. A missing key file is an error with recovery
//!   steps, never a silent new key;
//! - delete: removes the file, if it still holds the recorded key;
//! - read: reports whether the file still holds the recorded key.

use std::path::{Path, PathBuf};

use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{
    CreateContext, Drift, Error, ExposeSecret, PrivatePath, ReadOutcome, Recorded, Resource,
    Result, SecretRef, SecretString,
};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ssh_key::private::RsaKeypair;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};

/// Inputs of `keypair`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairInputs {
    /// Key algorithm. Changing it generates a new key.
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
    /// RSA modulus size in bits, 3072 (default) or 4096; only with
    /// `algorithm = "rsa"`. Changing it generates a new key.
    #[serde(default)]
    pub rsa_bits: Option<u32>,
    /// ECDSA curve, `P-256` (default) or `P-384`; only with
    /// `algorithm = "ecdsa"`. Changing it generates a new key.
    #[serde(default)]
    pub ecdsa_curve: Option<Curve>,
    /// Comment stored with the key and appended to the public key line; no
    /// control characters (a line break would add a second key to every
    /// `authorized_keys` the public key goes into). Changing it keeps the
    /// key.
    #[serde(default)]
    pub comment: String,
    /// Any value; when it changes, a new key replaces the old one (like
    /// Terraform's `keepers`). Leave it unset to keep the key for ever.
    #[serde(default)]
    #[schemars(schema_with = "any_value")]
    pub rotation_trigger: Option<Value>,
    /// Where the private key is written on the deploying machine (OpenSSH
    /// format, mode 0600; missing directories are created with mode 0700).
    /// An absolute path without `..`, outside the Nix store, in directories
    /// no other user can write (a sticky one like /tmp only above the key's
    /// own directory); the file is never reached through a symbolic link,
    /// and an existing one is adopted only when it is a regular file of the
    /// deploying user that no one else can read. Changing it moves the key;
    /// a file already at the new path is replaced only when it holds this
    /// resource's key.
    pub private_key_path: PathBuf,
    /// Encrypt the private key file with a passphrase read from this secret
    /// (`{ file = ...; }` or `{ env = ...; }`). Changing it re-encrypts the
    /// same key.
    #[serde(default)]
    pub passphrase: Option<SecretRef>,
    /// Also return the private key file's contents as the output
    /// `privateKey`. Off by default: outputs are stored in the NixOps4 state
    /// in plain text, so turn this on only when the state itself is kept
    /// secret and the key must reach another machine through it.
    #[serde(default)]
    pub expose_private_key: bool,
}

fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Any JSON value.",
    })
}

/// Key algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// Ed25519 (256 bits): the default, and what OpenSSH recommends.
    #[default]
    Ed25519,
    /// RSA, 3072 or 4096 bits, for systems that accept nothing else.
    Rsa,
    /// ECDSA on NIST P-256 or P-384.
    Ecdsa,
}

/// ECDSA curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Curve {
    /// NIST P-256 (`ecdsa-sha2-nistp256`).
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384 (`ecdsa-sha2-nistp384`).
    #[serde(rename = "P-384")]
    P384,
}

/// Outputs of `keypair`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairOutputs {
    /// The public key as an OpenSSH line (`ssh-ed25519 AAAA... comment`),
    /// for `authorized_keys` and cloud-init.
    pub public_key: String,
    /// SHA256 fingerprint, as `ssh-keygen -l` prints it (`SHA256:...`).
    pub fingerprint: String,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// The key's size in bits.
    pub bits: u32,
    /// Absolute path of the private key file on the deploying machine.
    pub private_key_path: PathBuf,
    /// The private key file's contents (encrypted when a passphrase is set);
    /// only with `exposePrivateKey = true`.
    #[serde(default)]
    pub private_key: Option<String>,
}

/// The algorithm and size a key must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeySpec {
    algorithm: KeyAlgorithm,
    bits: u32,
}

impl KeySpec {
    fn describe(self) -> String {
        format!("{}-bit {:?}", self.bits, self.algorithm).to_lowercase()
    }
}

impl KeyPairInputs {
    /// Validates the algorithm options together.
    fn spec(&self) -> Result<KeySpec> {
        let bits = match self.algorithm {
            KeyAlgorithm::Ed25519 => 256,
            KeyAlgorithm::Rsa => match self.rsa_bits.unwrap_or(3072) {
                bits @ (3072 | 4096) => bits,
                other => {
                    return Err(Error::invalid_input(
                        "rsaBits",
                        format!("{other} is not a supported RSA key size"),
                    )
                    .with_hint(
                        "use 3072 or 4096 (smaller RSA keys are too weak; larger ones are slow and rarely accepted)",
                    ));
                }
            },
            KeyAlgorithm::Ecdsa => match self.ecdsa_curve.unwrap_or(Curve::P256) {
                Curve::P256 => 256,
                Curve::P384 => 384,
            },
        };
        if self.rsa_bits.is_some() && self.algorithm != KeyAlgorithm::Rsa {
            return Err(Error::invalid_input(
                "rsaBits",
                format!(
                    "only applies to algorithm \"rsa\", not {:?}",
                    self.algorithm
                ),
            )
            .with_hint("remove `rsaBits`, or set `algorithm = \"rsa\"`"));
        }
        if self.ecdsa_curve.is_some() && self.algorithm != KeyAlgorithm::Ecdsa {
            return Err(Error::invalid_input(
                "ecdsaCurve",
                format!(
                    "only applies to algorithm \"ecdsa\", not {:?}",
                    self.algorithm
                ),
            )
            .with_hint("remove `ecdsaCurve`, or set `algorithm = \"ecdsa\"`"));
        }
        Ok(KeySpec {
            algorithm: self.algorithm,
            bits,
        })
    }

    /// The private key path, checked (see [`PrivatePath`]).
    fn path(&self) -> Result<PrivatePath> {
        PrivatePath::parse("privateKeyPath", &self.private_key_path)
    }

    /// Refuses control characters in the comment: a line break would make
    /// the public key two lines, the second one a key of the comment's
    /// choosing in every `authorized_keys` and cloud-init it goes into.
    fn check_comment(&self) -> Result<()> {
        if let Some(c) = self.comment.chars().find(|c| c.is_control()) {
            return Err(Error::invalid_input(
                "comment",
                format!(
                    "holds the control character {c:?}; the comment ends the public key line, \
                     and a line break there would add a line of its own to every \
                     `authorized_keys` the key goes into"
                ),
            )
            .with_hint(
                "use a comment of printable characters on one line, e.g. \"deployer@example.org\" \
                 (no newline, carriage return, tab or NUL)",
            ));
        }
        Ok(())
    }

    fn read_passphrase(&self) -> Result<Option<SecretString>> {
        self.passphrase
            .as_ref()
            .map(|secret| secret.read("passphrase"))
            .transpose()
    }
}

/// The `keypair` resource type.
#[derive(Debug, Default)]
pub struct KeyPair;

impl Resource for KeyPair {
    type Inputs = KeyPairInputs;
    type Outputs = KeyPairOutputs;

    const TYPE: &'static str = "keypair";
    const DESCRIPTION: &'static str = "An SSH key pair, generated once and kept across deployments. \
        The private key is written to a file on the deploying machine (mode 0600, atomically); \
        the public key and its fingerprint are outputs. A new key is generated only when the \
        algorithm, its size or `rotationTrigger` changes.";
    const REQUIRE_STATE: bool = true;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(&self, inputs: KeyPairInputs, _: CreateContext) -> Result<KeyPairOutputs> {
        let spec = inputs.spec()?;
        inputs.check_comment()?;
        let path = inputs.path()?;
        let passphrase = inputs.read_passphrase()?;
        let key = match load(&path)? {
            Some((existing, _)) => {
                // A key is already there: the file of a crashed earlier
                // attempt, or a key the user wants managed (a regular file
                // of ours, private, in a directory only we can change: see
                // `PrivatePath`). Adopt it only if it is what was asked
                // for; never overwrite it.
                let found = spec_of(existing.public_key())?;
                if found != spec {
                    return Err(Error::conflict(format!(
                        "`{}` already holds a {} key ({}), not the {} key asked for",
                        path.path().display(),
                        found.describe(),
                        fingerprint(existing.public_key()),
                        spec.describe()
                    ))
                    .with_field("privateKeyPath")
                    .with_hint(
                        "move that file away or choose another `privateKeyPath`; to adopt the \
                         existing key instead, set `algorithm` (and its size) to match it",
                    ));
                }
                tracing::info!(
                    path = %path.path().display(),
                    fingerprint = %fingerprint(existing.public_key()),
                    "adopting the key already at the path"
                );
                unlock(existing, path.path(), &[passphrase.as_ref()])?
            }
            None => {
                let key = generate(spec)?;
                tracing::info!(
                    path = %path.path().display(),
                    fingerprint = %fingerprint(key.public_key()),
                    "generated a new {} key",
                    spec.describe()
                );
                key
            }
        };
        let text = store(&path, key, &inputs.comment, passphrase.as_ref())?;
        outputs(&text, path.path(), inputs.expose_private_key)
    }

    async fn update(
        &self,
        inputs: KeyPairInputs,
        previous: Recorded<KeyPairInputs, KeyPairOutputs>,
    ) -> Result<KeyPairOutputs> {
        let spec = inputs.spec()?;
        inputs.check_comment()?;
        let path = inputs.path()?;
        let old_path = recorded_path(&previous.outputs)?;
        let recorded = recorded_public_key(&previous.outputs)?;
        let passphrase = inputs.read_passphrase()?;
        // The passphrase may have just changed: the file is still encrypted
        // with the old one (or, after a crashed attempt, with the new one).
        let old_passphrase = match &previous.inputs.passphrase {
            Some(old) if previous.inputs.passphrase != inputs.passphrase => {
                old.read("passphrase").ok()
            }
            _ => None,
        };
        let passphrases = [passphrase.as_ref(), old_passphrase.as_ref()];
        let recorded_spec = spec_of(&recorded)?;
        let rotate =
            spec != recorded_spec || inputs.rotation_trigger != previous.inputs.rotation_trigger;
        let moving = path != old_path;

        let at_old = load(&old_path)?;
        let at_new = if moving { load(&path)? } else { None };
        // A key file at the new path is replaced only when it is provably
        // this resource's: the recorded key, or the very key at the recorded
        // path (what a crashed earlier attempt of this update copied there).
        if let Some((found, _)) = &at_new {
            let ours = same_key(found.public_key(), &recorded)
                || at_old
                    .as_ref()
                    .is_some_and(|(old, _)| same_key(found.public_key(), old.public_key()));
            if !ours {
                return Err(Error::conflict(format!(
                    "`{}` holds another key ({}) than this resource's ({}); it is left untouched",
                    path.path().display(),
                    fingerprint(found.public_key()),
                    fingerprint(&recorded)
                ))
                .with_field("privateKeyPath")
                .with_hint(format!(
                    "choose a `privateKeyPath` where no other key lives, or move that file away \
                     if it is not needed; this resource's key stays at `{}` until then. If it is \
                     the new key a crashed run of this very update (with a new \
                     `rotationTrigger` or algorithm) wrote, move it to `{}` and run again",
                    old_path.path().display(),
                    old_path.path().display()
                )));
            }
        }

        let key = if rotate {
            let key = generate(spec)?;
            tracing::info!(
                path = %path.path().display(),
                old = %fingerprint(&recorded),
                new = %fingerprint(key.public_key()),
                "replacing the key with a new {} key",
                spec.describe()
            );
            key
        } else {
            match (&at_old, &at_new) {
                (Some((existing, _)), _) if same_key(existing.public_key(), &recorded) => {
                    unlock(existing.clone(), old_path.path(), &passphrases)?
                }
                // A crashed attempt of this move got as far as removing the
                // old file: the key is already at the new path.
                (_, Some((existing, _))) if same_key(existing.public_key(), &recorded) => {
                    unlock(existing.clone(), path.path(), &passphrases)?
                }
                (Some((existing, _)), _) => {
                    return Err(another_key_error(existing, &recorded, old_path.path()));
                }
                (None, _) => return Err(missing_key_error(old_path.path(), &recorded)),
            }
        };

        let unchanged = !rotate
            && !moving
            && key.comment() == inputs.comment
            && previous.inputs.passphrase == inputs.passphrase;
        // Which file at the old path is ours to remove after a move.
        let old_is_ours = match &at_old {
            None => false,
            Some((existing, _)) => same_key(existing.public_key(), &recorded) || rotate,
        };
        let text = match &at_old {
            // Nothing about the file changes; keep it byte for byte.
            Some((_, text)) if unchanged => text.clone(),
            _ => {
                if rotate && moving {
                    // The new key goes to the recorded path first: should we
                    // crash after copying it to the new path, the retry finds
                    // the same key at both and knows the new one is ours.
                    store(&old_path, key.clone(), &inputs.comment, passphrase.as_ref())?;
                }
                store(&path, key, &inputs.comment, passphrase.as_ref())?
            }
        };
        if moving {
            fedi_protocol::fault::point(FAULT_BEFORE_REMOVING_OLD_PATH);
            if old_is_ours || rotate {
                old_path.remove().map_err(|e| {
                    e.context(format!(
                        "the key now lives at `{}`, but the old file `{}` could not be removed \
                         (remove it by hand)",
                        path.path().display(),
                        old_path.path().display()
                    ))
                })?;
            } else if at_old.is_some() {
                tracing::warn!(
                    path = %old_path.path().display(),
                    "the old path holds another key than this resource's; leaving it"
                );
            }
            fedi_protocol::fault::point(FAULT_AFTER_REMOVING_OLD_PATH);
            tracing::info!(from = %old_path.path().display(), to = %path.path().display(), "moved the private key");
        }
        outputs(&text, path.path(), inputs.expose_private_key)
    }

    async fn delete(&self, current: Recorded<KeyPairInputs, KeyPairOutputs>) -> Result<()> {
        let path = recorded_path(&current.outputs)?;
        let recorded = recorded_public_key(&current.outputs)?;
        match load(&path)? {
            None => {
                tracing::info!(path = %path.path().display(), "the private key file is already gone");
                Ok(())
            }
            Some((existing, _)) => {
                check_same_key(&existing, &recorded, path.path())?;
                path.remove()?;
                tracing::info!(path = %path.path().display(), fingerprint = %fingerprint(&recorded), "removed the private key");
                Ok(())
            }
        }
    }

    async fn read(
        &self,
        current: Recorded<KeyPairInputs, KeyPairOutputs>,
    ) -> Result<ReadOutcome<KeyPairOutputs>> {
        let path = recorded_path(&current.outputs)?;
        let recorded = recorded_public_key(&current.outputs)?;
        let Some((existing, text)) = load(&path)? else {
            return Ok(ReadOutcome::Gone);
        };
        let mut drift = Vec::new();
        if existing.public_key().key_data() != recorded.key_data() {
            drift.push(Drift {
                property: "publicKey".into(),
                message: format!(
                    "the file holds another key ({}) than the one recorded ({})",
                    fingerprint(existing.public_key()),
                    fingerprint(&recorded)
                ),
            });
        }
        if existing.comment() != current.inputs.comment {
            drift.push(Drift {
                property: "comment".into(),
                message: format!(
                    "the file's key has comment {:?}, the inputs say {:?}",
                    existing.comment(),
                    current.inputs.comment
                ),
            });
        }
        if existing.is_encrypted() != current.inputs.passphrase.is_some() {
            drift.push(Drift {
                property: "passphrase".into(),
                message: if existing.is_encrypted() {
                    "the file is encrypted, but no passphrase is declared".into()
                } else {
                    "the file is not encrypted, but a passphrase is declared".into()
                },
            });
        }
        let outputs = outputs(&text, path.path(), current.inputs.expose_private_key)?;
        Ok(ReadOutcome::Exists { outputs, drift })
    }
}

/// The [fault point](fedi_protocol::fault) of an update that moves the key:
/// the new file written, the old one not yet removed.
pub const FAULT_BEFORE_REMOVING_OLD_PATH: &str = "ssh-key-before-removing-old-path";

/// The [fault point](fedi_protocol::fault) of an update that moves the key,
/// once the old file is removed and before the answer.
pub const FAULT_AFTER_REMOVING_OLD_PATH: &str = "ssh-key-after-removing-old-path";

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// The recorded private key path, checked like an input.
fn recorded_path(outputs: &KeyPairOutputs) -> Result<PrivatePath> {
    PrivatePath::parse("privateKeyPath", &outputs.private_key_path)
        .map_err(|e| e.context("the recorded `privateKeyPath` (state)".to_string()))
}

/// Generates a key of the given spec.
fn generate(spec: KeySpec) -> Result<PrivateKey> {
    let generated = match spec.algorithm {
        KeyAlgorithm::Ed25519 => PrivateKey::random(&mut OsRng, Algorithm::Ed25519),
        KeyAlgorithm::Ecdsa => {
            let curve = if spec.bits == 384 {
                EcdsaCurve::NistP384
            } else {
                EcdsaCurve::NistP256
            };
            PrivateKey::random(&mut OsRng, Algorithm::Ecdsa { curve })
        }
        KeyAlgorithm::Rsa => {
            RsaKeypair::random(&mut OsRng, spec.bits as usize).map(PrivateKey::from)
        }
    };
    generated.map_err(|e| {
        Error::internal(format!("generating a {} key failed", spec.describe())).with_source(e)
    })
}

/// Reads the key file at `path` (see [`PrivatePath::read`] for what is
/// refused): `None` when there is none. The public half of an OpenSSH key is
/// readable without the passphrase.
fn load(path: &PrivatePath) -> Result<Option<(PrivateKey, String)>> {
    let Some(bytes) = path.read()? else {
        return Ok(None);
    };
    let not_a_key = || {
        Error::conflict(format!(
            "`{}` exists but is not an OpenSSH private key",
            path.path().display()
        ))
        .with_field("privateKeyPath")
        .with_hint("move the file away or choose another `privateKeyPath`; it is left untouched")
    };
    // The parse error is not shown: it could quote the file's contents.
    let text = String::from_utf8(bytes).map_err(|_| not_a_key())?;
    let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|_| not_a_key())?;
    Ok(Some((key, text)))
}

/// Decrypts `key` when it is encrypted, trying each passphrase in turn.
fn unlock(
    key: PrivateKey,
    path: &Path,
    passphrases: &[Option<&SecretString>],
) -> Result<PrivateKey> {
    if !key.is_encrypted() {
        return Ok(key);
    }
    let candidates: Vec<&SecretString> = passphrases.iter().flatten().copied().collect();
    if candidates.is_empty() {
        return Err(Error::invalid_input(
            "passphrase",
            format!(
                "`{}` is encrypted, but no passphrase is given",
                path.display()
            ),
        )
        .with_hint("set `passphrase` to the secret the key was encrypted with"));
    }
    for passphrase in candidates {
        if let Ok(decrypted) = key.decrypt(passphrase.expose_secret().as_bytes()) {
            return Ok(decrypted);
        }
    }
    Err(Error::invalid_input(
        "passphrase",
        format!("the passphrase does not decrypt `{}`", path.display()),
    )
    .with_hint(
        "give the passphrase the key was encrypted with; to change it, keep the old secret's \
         file or variable until this deployment has run once with the new one",
    ))
}

/// Writes `key` (decrypted) to `path` with `comment`, encrypted when a
/// passphrase is given; returns the file's text.
fn store(
    path: &PrivatePath,
    mut key: PrivateKey,
    comment: &str,
    passphrase: Option<&SecretString>,
) -> Result<String> {
    key.set_comment(comment);
    let key = match passphrase {
        Some(passphrase) => key
            .encrypt(&mut OsRng, passphrase.expose_secret().as_bytes())
            .map_err(|e| Error::internal("encrypting the private key failed").with_source(e))?,
        None => key,
    };
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::internal("encoding the private key failed").with_source(e))?;
    path.write(text.as_bytes())?;
    Ok(text.to_string())
}

/// The outputs for the key file `text` at `path`.
fn outputs(text: &str, path: &Path, expose_private_key: bool) -> Result<KeyPairOutputs> {
    let key = PrivateKey::from_openssh(text.as_bytes())
        .map_err(|e| Error::internal("the key file just written does not parse").with_source(e))?;
    let public = key.public_key();
    let spec = spec_of(public)?;
    Ok(KeyPairOutputs {
        public_key: public
            .to_openssh()
            .map_err(|e| Error::internal("encoding the public key failed").with_source(e))?,
        fingerprint: fingerprint(public),
        algorithm: spec.algorithm,
        bits: spec.bits,
        private_key_path: path.to_path_buf(),
        private_key: expose_private_key.then(|| text.to_string()),
    })
}

fn fingerprint(public: &PublicKey) -> String {
    public.fingerprint(HashAlg::Sha256).to_string()
}

/// The algorithm and size of a public key.
fn spec_of(public: &PublicKey) -> Result<KeySpec> {
    let spec = match public.key_data() {
        KeyData::Ed25519(_) => KeySpec {
            algorithm: KeyAlgorithm::Ed25519,
            bits: 256,
        },
        KeyData::Ecdsa(ecdsa) => KeySpec {
            algorithm: KeyAlgorithm::Ecdsa,
            bits: match ecdsa.curve() {
                EcdsaCurve::NistP256 => 256,
                EcdsaCurve::NistP384 => 384,
                EcdsaCurve::NistP521 => 521,
            },
        },
        KeyData::Rsa(rsa) => KeySpec {
            algorithm: KeyAlgorithm::Rsa,
            bits: rsa
                .n
                .as_positive_bytes()
                .map(|n| (n.len() * 8) as u32)
                .unwrap_or(0),
        },
        other => {
            return Err(
                Error::conflict(format!("unsupported key type {}", other.algorithm()))
                    .with_hint("use an ed25519, rsa or ecdsa key"),
            );
        }
    };
    Ok(spec)
}

fn recorded_public_key(outputs: &KeyPairOutputs) -> Result<PublicKey> {
    PublicKey::from_openssh(&outputs.public_key).map_err(|e| {
        Error::invalid_input(
            "resource.outputProperties.publicKey",
            "the recorded public key is not an OpenSSH public key line",
        )
        .with_source(e)
        .with_hint("the state is damaged; restore it from a backup")
    })
}

/// Fails unless `existing` is the recorded key.
fn check_same_key(existing: &PrivateKey, recorded: &PublicKey, path: &Path) -> Result<()> {
    if same_key(existing.public_key(), recorded) {
        return Ok(());
    }
    Err(another_key_error(existing, recorded, path))
}

fn another_key_error(existing: &PrivateKey, recorded: &PublicKey, path: &Path) -> Error {
    Error::conflict(format!(
        "`{}` holds another key ({}) than the one this resource recorded ({}); it is left untouched",
        path.display(),
        fingerprint(existing.public_key()),
        fingerprint(recorded)
    ))
    .with_field("privateKeyPath")
    .with_hint(
        "put the recorded key back at that path, or change `rotationTrigger` to replace the file \
         with a new key",
    )
}

fn missing_key_error(path: &Path, recorded: &PublicKey) -> Error {
    Error::not_found(format!(
        "the private key file `{}` is missing, so the recorded key ({}) cannot be kept; the \
         deployment state is shared, private keys are not (was the key created on another machine?)",
        path.display(),
        fingerprint(recorded)
    ))
    .with_field("privateKeyPath")
    .with_hint(
        "copy the key file from the machine that created it to that path (mode 0600) and run \
         again; or, to replace the key with a new one, change `rotationTrigger` (everything that \
         trusts the old public key must then get the new one)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(json: Value) -> KeyPairInputs {
        serde_json::from_value(json).expect("inputs parse")
    }

    #[test]
    fn spec_defaults_and_validation() {
        let spec = inputs(serde_json::json!({"privateKeyPath": "/k"}))
            .spec()
            .unwrap();
        assert_eq!(
            spec,
            KeySpec {
                algorithm: KeyAlgorithm::Ed25519,
                bits: 256
            }
        );
        let rsa = inputs(serde_json::json!({"privateKeyPath": "/k", "algorithm": "rsa"}))
            .spec()
            .unwrap();
        assert_eq!(rsa.bits, 3072);
        let p384 = inputs(serde_json::json!({"privateKeyPath": "/k", "algorithm": "ecdsa", "ecdsaCurve": "P-384"}))
            .spec()
            .unwrap();
        assert_eq!(p384.bits, 384);
        let weak = inputs(
            serde_json::json!({"privateKeyPath": "/k", "algorithm": "rsa", "rsaBits": 1024}),
        )
        .spec()
        .unwrap_err();
        assert_eq!(weak.field(), Some("rsaBits"));
        let misplaced = inputs(serde_json::json!({"privateKeyPath": "/k", "rsaBits": 4096}))
            .spec()
            .unwrap_err();
        assert!(
            misplaced
                .to_string()
                .contains("only applies to algorithm \"rsa\""),
            "{misplaced}"
        );
    }

    #[test]
    fn nix_store_paths_are_refused() {
        let error = inputs(serde_json::json!({"privateKeyPath": "/nix/store/abc-key"}))
            .path()
            .unwrap_err();
        assert!(error.to_string().contains("Nix store"), "{error}");
    }
}
