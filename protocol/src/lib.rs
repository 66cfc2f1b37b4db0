//! The NixOps4 resource-provider protocol, and a framework for writing
//! providers in it.
//!
//! A provider author declares resource types (a type implementing
//! [`Resource`]: inputs and outputs structs and async operations) and calls
//! [`Provider::run`]; this crate does the rest:
//!
//! - **Wire format** ([`wire`]): exactly NixOps4 protocol v0, one JSON object
//!   per line. Bad lines (not UTF-8, not JSON, not an object, unknown kind,
//!   longer than [`MAX_LINE_BYTES`]) get an `errorResponse` saying what was
//!   wrong; the provider never panics or dies on input.
//! - **Stdio discipline** ([`Provider::run`]): before any provider code runs,
//!   the real stdout is taken for the protocol and fd 1 is pointed at stderr,
//!   so a stray print cannot corrupt the channel. EOF on stdin exits 0.
//! - **Validation** ([`decode_inputs`]): unknown input fields, missing and
//!   mistyped fields are errors naming the field; `requireState` is
//!   enforced; unknown resource types are answered with the supported list.
//! - **Errors** ([`Error`]): kinds a user can act on, rendered with their
//!   causes and a hint into one `errorResponse` message.
//! - **Secrets** ([`SecretRef`]): inputs point at a file or an environment
//!   variable; values never appear in `Debug`, logs or errors.
//!   [`scrub`] (and [`Error::scrub_secrets`]) removes known secret values
//!   from text a backend or tool produced before it goes into an error.
//! - **Private files** ([`PrivatePath`], [`paths`]): absolute paths
//!   without `..`, no directory on the way others can change, never
//!   through a symbolic link, only our own 0600 files adopted.
//! - **Self-description** ([`schema`], [`docgen`]): `--schema` prints JSON
//!   Schemas of every resource type's inputs and outputs, from which the Nix
//!   provider modules and Markdown reference pages are generated.
//! - **Logging** ([`logging`]): `tracing` to stderr, filtered by `FEDI_LOG`.
//! - **Test kit** (`testkit`, feature `testkit`): spawn a provider as
//!   NixOps4 does, validate every message against the official schema, record
//!   transcripts.
//!
//! # Extensions beyond NixOps4 v0
//!
//! NixOps4 v0 has neither delete nor read. This suite adds both as request
//! kinds whose names start with `x`; NixOps4 never sends them, and a resource
//! type that does not implement one answers with an `errorResponse`. Their
//! JSON Schema is `schema/extensions-v0.json` in this crate.
//!
//! Delete removes the real resource; deleting one that is already gone
//! succeeds:
//!
//! ```json
//! {"xDeleteResourceRequest": {"resource": {"type": "keypair",
//!   "inputProperties": {...}, "outputProperties": {...}}}}
//! {"xDeleteResourceResponse": {}}
//! ```
//!
//! Read (refresh) looks at the real resource, changes nothing, and reports
//! whether it exists, its current outputs, and drift from what was recorded:
//!
//! ```json
//! {"xReadResourceRequest": {"resource": {"type": "keypair",
//!   "inputProperties": {...}, "outputProperties": {...}}}}
//! {"xReadResourceResponse": {"exists": true, "outputProperties": {...},
//!   "drift": [{"property": "publicKey", "message": "the file holds another key"}]}}
//! ```
//!
//! Providers also answer `--schema` on the command line (outside the
//! protocol) with a [`ProviderSchema`].

pub mod client;
pub mod docgen;
pub mod error;
pub mod fault;
pub mod files;
pub mod logging;
pub mod paths;
pub mod resource;
pub mod schema;
pub mod secret;
pub mod server;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod wire;

pub use error::{Context, Error, ErrorKind, Result, ResultExt};
pub use paths::PrivatePath;
pub use resource::{CreateContext, ReadOutcome, Recorded, Resource, StateEvent, decode_inputs};
pub use schema::ProviderSchema;
pub use secret::{ExposeSecret, SecretRef, SecretString, scrub};
pub use server::{MAX_LINE_BYTES, Provider};
pub use wire::Drift;

/// Re-exported so providers derive `JsonSchema` with the same version.
pub use schemars;

/// A [`Provider`] named `$name`, described by `$description`, with the
/// calling crate's version and binary name.
#[macro_export]
macro_rules! provider {
    ($name:expr, $description:expr) => {
        $crate::Provider::new(
            $name,
            $description,
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_BIN_NAME"),
        )
    };
}
