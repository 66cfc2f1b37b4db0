//! The error type every resource operation returns.
//!
//! An [`Error`] has a [`ErrorKind`] the user can act on, a message, an
//! optional hint saying what to do, and a chain of causes. It is rendered
//! into a single `errorResponse` message:
//!
//! ```text
//! invalid input `algorithm`: `dsa` is not supported: caused by ...
//! hint: use one of ed25519, rsa, ecdsa
//! ```
//!
//! Messages must never contain a secret's value: build them from names and
//! paths, not from contents.

use std::fmt;

/// What kind of failure this is, so the user knows what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The inputs are wrong; fix the deployment.
    InvalidInput,
    /// Something the operation needs does not exist.
    NotFound,
    /// The real-world state conflicts with the request (exists already,
    /// locked, not empty, owned by someone else).
    Conflict,
    /// The backend could not be reached or is temporarily failing; retrying
    /// later may succeed.
    Unavailable,
    /// The credentials are wrong or lack a permission.
    PermissionDenied,
    /// The provider does not implement the requested operation.
    Unsupported,
    /// A bug or an unexpected condition in the provider or backend.
    Internal,
}

impl ErrorKind {
    /// The words that start a rendered message of this kind.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "backend unavailable (retryable)",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unsupported => "unsupported operation",
            ErrorKind::Internal => "internal error",
        }
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A resource operation's failure; see the [module docs](self).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    field: Option<String>,
    message: String,
    hint: Option<String>,
    context: Vec<String>,
    source: Option<Cause>,
}

/// The result of a resource operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            field: None,
            message: message.into(),
            hint: None,
            context: Vec::new(),
            source: None,
        }
    }

    /// The input named `field` is wrong: `problem` says how.
    pub fn invalid_input(field: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, problem).with_field(field)
    }

    /// Something the operation needs does not exist.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    /// The real-world state conflicts with the request.
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, message)
    }

    /// The backend is unreachable or temporarily failing.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// Credentials are wrong or lack a permission.
    pub fn permission_denied(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::PermissionDenied, message)
    }

    /// The operation is not implemented by this resource type.
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// An unexpected condition.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// Names the input field the error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Error {
        self.field = Some(field.into());
        self
    }

    /// Says what the user can do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// Attaches the underlying cause (rendered after the message).
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        self.source = Some(source.into());
        self
    }

    /// Adds what was being done when the error happened (outermost last).
    pub fn context(mut self, context: impl Into<String>) -> Error {
        self.context.push(context.into());
        self
    }

    /// The same error with every known secret value (and any
    /// `Authorization:` header value) removed from its message, hint,
    /// context and causes; see [`crate::secret::scrub`]. For errors that
    /// carry text a backend or a tool produced. The causes become text.
    pub fn scrub_secrets(self, secrets: &[&crate::SecretString]) -> Error {
        let scrub = |text: &str| crate::secret::scrub(text, secrets);
        let source = self.source.map(|source| {
            let mut text = source.to_string();
            let mut cause = source.source();
            while let Some(e) = cause {
                text.push_str(": ");
                text.push_str(&e.to_string());
                cause = e.source();
            }
            Box::new(Scrubbed(scrub(&text))) as Cause
        });
        Error {
            kind: self.kind,
            field: self.field,
            message: scrub(&self.message),
            hint: self.hint.as_deref().map(scrub),
            context: self.context.iter().map(|c| scrub(c)).collect(),
            source,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The input field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The hint, if any.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Error {
    /// `<context>: <kind> [`field`]: <message>: <cause>: <cause>\nhint: <hint>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for context in self.context.iter().rev() {
            write!(f, "{context}: ")?;
        }
        f.write_str(self.kind.label())?;
        if let Some(field) = &self.field {
            write!(f, " `{field}`")?;
        }
        write!(f, ": {}", self.message)?;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A cause whose text was scrubbed of secrets.
#[derive(Debug)]
struct Scrubbed(String);

impl fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Scrubbed {}

/// Adds context to results, as `anyhow::Context` does, choosing the kind.
pub trait ResultExt<T> {
    /// Wraps a foreign error: `kind` and `message` describe what failed, the
    /// error becomes the cause.
    fn or_error(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E> ResultExt<T> for std::result::Result<T, E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn or_error(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, message()).with_source(e))
    }
}

/// Adds context to an already-typed [`Result`].
pub trait Context<T> {
    /// Prefixes the error with what was being done.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kind_field_message_causes_context_and_hint() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied");
        let error = Error::invalid_input("privateKeyPath", "cannot write `/root/x`")
            .with_source(io)
            .with_hint("choose a writable directory")
            .context("creating key `deployer`");
        assert_eq!(
            error.to_string(),
            "creating key `deployer`: invalid input `privateKeyPath`: cannot write `/root/x`: \
             Permission denied\nhint: choose a writable directory"
        );
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert_eq!(error.field(), Some("privateKeyPath"));
    }

    #[test]
    fn retryable_kind_says_so() {
        let error = Error::unavailable("connection refused by 127.0.0.1:3903");
        assert!(
            error
                .to_string()
                .starts_with("backend unavailable (retryable): ")
        );
    }

    #[test]
    fn foreign_errors_become_causes() {
        let result: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::other("disk on fire"));
        let error = result
            .or_error(ErrorKind::Internal, || "writing state".into())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "internal error: writing state: disk on fire"
        );
    }

    #[test]
    fn scrub_secrets_cleans_message_hint_context_and_causes() {
        let token = crate::SecretString::from("s3cr3t-token");
        let cause = std::io::Error::other("server said: Authorization: Bearer s3cr3t-token");
        let error = Error::unavailable("answer echoed s3cr3t-token")
            .with_source(cause)
            .with_hint("not s3cr3t-token")
            .context("while s3cr3t-token")
            .scrub_secrets(&[&token]);
        let text = error.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(
            text,
            "while [REDACTED]: backend unavailable (retryable): answer echoed [REDACTED]: \
             server said: Authorization: [REDACTED]\nhint: not [REDACTED]"
        );
        assert_eq!(error.kind(), ErrorKind::Unavailable);
    }
}
