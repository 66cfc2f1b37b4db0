//! Logging to stderr with `tracing`.
//!
//! Stdout belongs to the protocol; every log line goes to stderr, which
//! NixOps4 passes through to the user. The level comes from `FEDI_LOG`
//! (`error`, `warn`, `info`, `debug`, `trace`, or directives such as
//! `fedi_ssh_key=debug`); the default is `info`. Colours only when stderr is a
//! terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable that sets the log filter.
pub const LOG_ENV: &str = "FEDI_LOG";

/// Installs the stderr subscriber. Safe to call more than once.
pub fn init() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
