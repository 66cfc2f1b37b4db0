//! Secrets: how an input points at one, and how its value is held.
//!
//! A secret (API token, TSIG key, passphrase) is never a literal input: the
//! inputs of a deployment pass through the Nix store, which every local user
//! can read. An input of type [`SecretRef`] names where the value is, a file
//! or an environment variable, and the provider reads it when the operation
//! runs. The value is held as a [`SecretString`], whose `Debug` shows
//! `[REDACTED]`, and errors about it name the file or variable, never the
//! content.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

pub use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// Where to read a secret from: `{ file = "/run/secrets/token"; }` or
/// `{ env = "PROXMOX_TOKEN"; }`. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "Where to read a secret from at operation time: `{ file = \"/run/secrets/x\"; }` \
                   (a file readable by the deployer, outside the Nix store; one trailing newline is \
                   ignored) or `{ env = \"VARIABLE\"; }`. Exactly one of the two. Never the \
                   secret itself: deployment inputs end up in the world-readable Nix store."
)]
pub struct SecretRef {
    /// Path of a file holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

const LITERAL_REFUSED: &str = "a secret is never given literally (deployment inputs are stored in \
    the world-readable Nix store); put it in a file and give `{ file = \"/path/to/secret\"; }`, or \
    in an environment variable and give `{ env = \"VARIABLE\"; }`";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            file: Option<PathBuf>,
            #[serde(default)]
            env: Option<String>,
        }

        // Look at the shape first, so that a literal string (maybe the secret
        // itself) is refused without echoing it.
        let value = serde_json::Value::deserialize(deserializer)?;
        if !value.is_object() {
            return Err(D::Error::custom(LITERAL_REFUSED));
        }
        let fields: Fields = serde_json::from_value(value).map_err(D::Error::custom)?;
        match (fields.file, fields.env) {
            (Some(file), None) => Ok(SecretRef::file(file)),
            (None, Some(env)) => Ok(SecretRef::env(env)),
            (Some(_), Some(_)) => Err(D::Error::custom(
                "give either `file` or `env` for a secret, not both",
            )),
            (None, None) => Err(D::Error::custom(
                "a secret reference needs `file = \"/path\"` or `env = \"VARIABLE\"`",
            )),
        }
    }
}

impl SecretRef {
    /// A secret read from a file.
    pub fn file(path: impl Into<PathBuf>) -> SecretRef {
        SecretRef {
            file: Some(path.into()),
            env: None,
        }
    }

    /// A secret read from an environment variable.
    pub fn env(name: impl Into<String>) -> SecretRef {
        SecretRef {
            file: None,
            env: Some(name.into()),
        }
    }

    /// Where the secret lives, for messages: `file /x` or `environment
    /// variable X`.
    pub fn describe(&self) -> String {
        match (&self.file, &self.env) {
            (Some(path), _) => format!("file `{}`", path.display()),
            (None, Some(name)) => format!("environment variable `{name}`"),
            (None, None) => "nowhere".to_string(),
        }
    }

    /// Reads the secret. `field` is the input's name, for errors. One
    /// trailing newline (as editors and `echo` add) is dropped; an empty
    /// secret is an error.
    pub fn read(&self, field: &str) -> Result<SecretString> {
        let mut value = match (&self.file, &self.env) {
            (Some(path), _) => {
                let metadata = std::fs::metadata(path).map_err(|e| {
                    Error::invalid_input(field, format!("cannot read secret file `{}`", path.display()))
                        .with_source(e)
                        .with_hint("create the file (readable by the user running the deployment) or fix the path")
                })?;
                if metadata.permissions().mode() & 0o004 != 0 {
                    tracing::warn!(
                        field,
                        path = %path.display(),
                        "secret file is readable by every user; consider `chmod o-r`"
                    );
                }
                std::fs::read_to_string(path).map_err(|e| {
                    Error::invalid_input(field, format!("cannot read secret file `{}`", path.display()))
                        .with_source(e)
                        .with_hint("the file must be readable by the user running the deployment and hold UTF-8 text")
                })?
            }
            (None, Some(name)) => std::env::var(name).map_err(|e| {
                let problem = match e {
                    std::env::VarError::NotPresent => "is not set",
                    std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                };
                Error::invalid_input(field, format!("environment variable `{name}` {problem}"))
                    .with_hint(
                        "export it in the environment that runs the deployment, or use `file`",
                    )
            })?,
            (None, None) => {
                return Err(Error::invalid_input(field, "no `file` or `env` given"));
            }
        };
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(Error::invalid_input(
                field,
                format!("the secret in {} is empty", self.describe()),
            ));
        }
        Ok(SecretString::from(value))
    }
}

/// What replaces a secret value in a scrubbed text.
pub const REDACTED: &str = "[REDACTED]";

/// `text` with every occurrence of each of `secrets` replaced by
/// [`REDACTED`], and the rest of any line after an `Authorization:` header
/// name (any case) too. For text a backend or a tool produced (an HTTP
/// error body, `ssh` or `nix` output) before it goes into an [`Error`] or
/// a log: a backend that echoes the request (some do, headers included)
/// would otherwise put the credential into our message. Longer secrets are
/// replaced first, so one that contains another is removed whole; empty
/// ones are ignored.
pub fn scrub(text: &str, secrets: &[&SecretString]) -> String {
    let mut values: Vec<&str> = secrets
        .iter()
        .map(|s| s.expose_secret())
        .filter(|v| !v.is_empty())
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for value in values {
        if out.contains(value) {
            out = out.replace(value, REDACTED);
        }
    }
    scrub_authorization(&out)
}

/// Cuts what follows `authorization:` (or `authorization=`) up to the end
/// of its line.
fn scrub_authorization(text: &str) -> String {
    const NAME: &str = "authorization";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(NAME) {
        let start = from + found;
        let after = start + NAME.len();
        let separator = lower[after..].trim_start_matches([' ', '"', '\'']);
        let sep_at = lower.len() - separator.len();
        if separator.starts_with(':') || separator.starts_with('=') {
            let value_start = sep_at + 1;
            let end = lower[value_start..]
                .find(['\n', '\r'])
                .map_or(lower.len(), |i| value_start + i);
            out.push_str(&text[rest..value_start]);
            out.push(' ');
            out.push_str(REDACTED);
            rest = end;
            from = end;
        } else {
            from = after;
        }
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn literal_string_is_refused_without_echoing_it() {
        let err = serde_json::from_value::<SecretRef>(serde_json::json!("hunter2")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("never given literally"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn exactly_one_source() {
        assert!(
            serde_json::from_value::<SecretRef>(serde_json::json!({"file": "/a", "env": "B"}))
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        assert!(
            serde_json::from_value::<SecretRef>(serde_json::json!({}))
                .unwrap_err()
                .to_string()
                .contains("needs")
        );
        let unknown =
            serde_json::from_value::<SecretRef>(serde_json::json!({"value": "x"})).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `value`"),
            "{unknown}"
        );
    }

    #[test]
    fn reads_file_dropping_one_newline_and_never_shows_content() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "s3cr3t-value").unwrap();
        let secret = SecretRef::file(file.path()).read("token").unwrap();
        assert_eq!(secret.expose_secret(), "s3cr3t-value");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }

    #[test]
    fn missing_file_error_names_field_and_path() {
        let err = SecretRef::file("/nonexistent/secret")
            .read("tokenSecret")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tokenSecret`"), "{err}");
        assert!(err.contains("/nonexistent/secret"), "{err}");
    }

    #[test]
    fn empty_secret_is_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = SecretRef::file(file.path()).read("key").unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn missing_env_var_is_named() {
        let err = SecretRef::env("FEDI_TEST_SURELY_UNSET_VARIABLE")
            .read("tsigSecret")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("FEDI_TEST_SURELY_UNSET_VARIABLE` is not set"),
            "{err}"
        );
    }

    #[test]
    fn scrub_removes_known_values_and_authorization_headers() {
        let token = SecretString::from("tok-123456");
        let longer = SecretString::from("tok-123456-extra");
        let text = "HTTP 401: echo: {\"Authorization\": \"Bearer tok-123456\"}\nkey tok-123456-extra, \
                    again tok-123456\nauthorization=Basic dXNlcjpwYXNz\nafter";
        let scrubbed = scrub(text, &[&token, &longer]);
        assert!(!scrubbed.contains("tok-123456"), "{scrubbed}");
        assert!(!scrubbed.contains("dXNlcjpwYXNz"), "{scrubbed}");
        assert!(
            scrubbed.starts_with("HTTP 401: echo: {\"Authorization\": [REDACTED]"),
            "{scrubbed}"
        );
        assert!(
            scrubbed.contains("key [REDACTED], again [REDACTED]\n"),
            "{scrubbed}"
        );
        assert!(scrubbed.ends_with("\nafter"), "{scrubbed}");
        assert_eq!(scrub("no secrets here", &[&token]), "no secrets here");
        assert_eq!(scrub("x", &[&SecretString::from("")]), "x");
    }
}
