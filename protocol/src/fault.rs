//! Fault injection for crash-safety tests.
//!
//! A provider marks the moments where a crash would hurt most (after the
//! backend made something, before the answer is written) with
//! [`point`]. When the environment variable [`FAULT_ENV`] names that point,
//! the process aborts there, as a `kill -9` would. Tests then run the same
//! operation again and check that it finds and adopts what the crashed run
//! made. Without the variable, [`point`] does nothing.

/// The environment variable naming the point at which to abort.
pub const FAULT_ENV: &str = "FEDI_TEST_FAULT";

/// Aborts the process if [`FAULT_ENV`] is set to `name`, after writing
/// [`abort_marker`] to stderr (directly, whatever the log level, so a test
/// can tell that it died here and not somewhere else).
pub fn point(name: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == name) {
        tracing::warn!(point = name, "aborting at the injected fault point");
        eprintln!("{}", abort_marker(name));
        std::process::abort();
    }
}

/// The line [`point`] writes to stderr just before it aborts at `name`.
pub fn abort_marker(name: &str) -> String {
    format!("fedi fault point `{name}` reached: aborting")
}
