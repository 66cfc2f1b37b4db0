//! Proxmox tasks (UPIDs): clone, start, stop, shutdown, destroy, resize,
//! migrate and the POST form of config answer with a task id and finish in
//! the background. [`wait`] polls the task's status with backoff until it is
//! `stopped`, then checks its `exitstatus`.

use std::time::{Duration, Instant};

use fedi_protocol::{Error, Result};
use serde_json::Value;

use crate::api::Api;

/// The first pause between polls; it grows by half each poll up to
/// [`MAX_POLL`], so a long clone is polled every few seconds, not
/// hammered.
pub const FIRST_POLL: Duration = Duration::from_millis(100);
/// The longest pause between polls.
pub const MAX_POLL: Duration = Duration::from_secs(2);

/// How a task ended badly.
#[derive(Debug)]
pub struct TaskFailed {
    /// The task's `exitstatus` (its error text), or why it could not be
    /// followed.
    pub exitstatus: String,
    /// Whether running it again may succeed (a lock timeout).
    pub transient: bool,
    /// The error to show.
    pub error: Error,
}

impl From<TaskFailed> for Error {
    fn from(e: TaskFailed) -> Error {
        e.error
    }
}

/// The node a UPID ran on (`UPID:node:...`).
pub fn node_of(upid: &str) -> Option<&str> {
    upid.strip_prefix("UPID:")?.split(':').next()
}

/// Waits for the task `upid` (started by `what`, e.g. "cloning VM 101") to
/// end, for at most `timeout`; `timeout_field` names the input that sets it.
pub async fn wait(
    api: &Api,
    upid: &Value,
    what: &str,
    timeout: Duration,
    timeout_field: &str,
) -> Result<(), TaskFailed> {
    let Some(upid) = upid.as_str().filter(|u| u.starts_with("UPID:")) else {
        // Older versions run some of these calls synchronously (null).
        return Ok(());
    };
    let node = node_of(upid).unwrap_or_default();
    let path = format!("nodes/{node}/tasks/{upid}/status");
    let started = Instant::now();
    let mut pause = FIRST_POLL;
    let mut early_refusals = 0;
    loop {
        tokio::time::sleep(pause.min(timeout.saturating_sub(started.elapsed()))).await;
        match api.get(&path, &[]).await {
            Ok(status) if status["status"] == "stopped" => {
                let exit = status["exitstatus"].as_str().unwrap_or("").to_string();
                if exit == "OK" {
                    return Ok(());
                }
                if exit.starts_with("WARNINGS") {
                    tracing::warn!(task = upid, exit, "{what}: the task ended with warnings");
                    return Ok(());
                }
                let transient = exit.contains("got timeout");
                return Err(TaskFailed {
                    error: Error::conflict(format!(
                        "{what} failed: Proxmox task {upid} ended with: {exit}"
                    )),
                    exitstatus: exit,
                    transient,
                });
            }
            Ok(_) => {}
            // Right after a task starts, its status can answer 400 briefly.
            Err(e) if e.status.is_some_and(|s| s.as_u16() == 400) && early_refusals < 10 => {
                early_refusals += 1;
                tracing::debug!(task = upid, reason = %e.reason, "task status not yet available");
            }
            Err(e) => {
                return Err(TaskFailed {
                    exitstatus: e.reason.clone(),
                    transient: false,
                    error: e.error.context(format!("following {what} (task {upid})")),
                });
            }
        }
        if started.elapsed() >= timeout {
            return Err(TaskFailed {
                exitstatus: "timeout".into(),
                transient: false,
                error: Error::unavailable(format!(
                    "{what}: Proxmox task {upid} still runs after {}s",
                    timeout.as_secs()
                ))
                .with_field(timeout_field)
                .with_hint(format!(
                    "the task goes on in Proxmox (see the node's task log); raise `{timeout_field}` \
                     or look at why it is slow, then run again"
                )),
            });
        }
        pause = (pause * 3 / 2).min(MAX_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_from_upid() {
        assert_eq!(
            node_of("UPID:pve1:00001234:0000ABCD:65000000:qmclone:9000:deployer@pve!fedi:"),
            Some("pve1")
        );
        assert_eq!(node_of("nope"), None);
    }
}
