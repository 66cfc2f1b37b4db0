//! Proxmox tasks (UPIDs): clone, start, stop, shutdown, destroy, resize,
//! migrate and the POST form of config answer with a task id and finish in
//! the background. [`wait`] polls the task's status with backoff until it is
//! `stopped`, then checks its `exitstatus`; [`classify`] says what an exit
//! status means, in one place, and [`run`] sends a request, waits for its
//! task and retries what is transient.

use std::time::{Duration, Instant};

use fedi_protocol::{Error, Result};
use reqwest::Method;
use serde_json::Value;

use crate::api::{ATTEMPTS, Api, CallError, Retry};

/// The first pause between polls; it grows by half each poll up to
/// [`MAX_POLL`], so a long clone is polled every few seconds, not
/// hammered.
pub const FIRST_POLL: Duration = Duration::from_millis(100);
/// The longest pause between polls.
pub const MAX_POLL: Duration = Duration::from_secs(2);

/// What a task's `exitstatus` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `OK`, or `WARNINGS: n`.
    Done,
    /// The worker could not take the config lock in time (`can't lock file
    /// '/var/lock/qemu-server/lock-N.conf' - got timeout`): it changed
    /// nothing, and sending the request again may succeed.
    LockTimeout,
    /// `VM N already running`: a start sent again (qemu-server's vm_start).
    AlreadyRunning,
    /// `Configuration file '...' does not exist`: a destroy sent again
    /// while the first ran (destroy_vm repeats its early checks in the
    /// worker), or a VM removed meanwhile.
    AlreadyGone,
    /// `unable to create VM N: config file already exists`: a concurrent
    /// clone took the VMID (clone_vm's worker checks again).
    VmidClash,
    /// Anything else.
    Failed,
    /// The task could not be followed (status request failed, timeout).
    Unknown,
}

/// Classifies an exit status. The texts are qemu-server's and
/// PVE::Tools::lock_file_full's; the lock timeout also comes wrapped, as
/// `clone failed: can't lock file ...`.
pub fn classify(exit: &str) -> Outcome {
    if exit == "OK" || exit.starts_with("WARNINGS") {
        Outcome::Done
    } else if exit.contains("can't lock file") && exit.contains("got timeout") {
        Outcome::LockTimeout
    } else if exit.contains("already running") {
        Outcome::AlreadyRunning
    } else if exit.contains("config file already exists") {
        Outcome::VmidClash
    } else if exit.contains("does not exist") && exit.contains("Configuration file") {
        Outcome::AlreadyGone
    } else {
        Outcome::Failed
    }
}

/// How a task ended badly.
#[derive(Debug)]
pub struct TaskFailed {
    /// The task's `exitstatus` (its error text), or why it could not be
    /// followed.
    pub exitstatus: String,
    /// What the exit status means.
    pub outcome: Outcome,
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
                let outcome = classify(&exit);
                if outcome == Outcome::Done {
                    if exit != "OK" {
                        tracing::warn!(task = upid, exit, "{what}: the task ended with warnings");
                    }
                    return Ok(());
                }
                let message = format!("{what} failed: Proxmox task {upid} ended with: {exit}");
                let error = if outcome == Outcome::LockTimeout {
                    Error::unavailable(message).with_hint(
                        "another operation held the VM's config lock for too long; run again",
                    )
                } else {
                    Error::conflict(message)
                };
                return Err(TaskFailed {
                    error,
                    exitstatus: exit,
                    outcome,
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
                    outcome: Outcome::Unknown,
                    error: e.error.context(format!("following {what} (task {upid})")),
                });
            }
        }
        if started.elapsed() >= timeout {
            return Err(TaskFailed {
                exitstatus: "timeout".into(),
                outcome: Outcome::Unknown,
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

/// A request that starts a task (a typed client verb: configure, resize,
/// start, shutdown, stop, migrate), and how to wait for it.
#[derive(Debug)]
pub struct Job<'a> {
    /// `POST`, `PUT` or `DELETE`.
    pub method: Method,
    /// The API path, e.g. `nodes/pve1/qemu/101/status/start`.
    pub path: String,
    /// Form parameters.
    pub form: Vec<(String, String)>,
    /// What it does, for messages: "starting VM 101".
    pub what: String,
    /// How long the task may take.
    pub timeout: Duration,
    /// The input that sets the timeout.
    pub timeout_field: &'a str,
    /// Exit statuses that mean the wanted state is already there (a start
    /// sent again ends "already running").
    pub done_if: &'a [Outcome],
}

/// Why a [`Job`] failed: refused when asked, or its task ended badly.
#[derive(Debug)]
pub enum Failure {
    /// The request was refused (or got no answer after the retries).
    Call(CallError),
    /// The task ended badly.
    Task(TaskFailed),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Call(e) => e.error,
            Failure::Task(t) => t.error,
        }
    }
}

impl Failure {
    /// The error to show, with what was being done.
    pub fn error(self, what: &str) -> Error {
        match self {
            Failure::Call(e) => e.error.context(what.to_string()),
            Failure::Task(t) => t.error,
        }
    }
}

/// Sends `job` and waits for its task. Requests that end the same however
/// often they are sent: a lost answer is sent again by [`Api::call`], and
/// a task that ended on a config lock timeout (it changed nothing) is run
/// again, a bounded number of times with a pause.
pub async fn run(api: &Api, job: &Job<'_>) -> Result<(), Failure> {
    for attempt in 1..=ATTEMPTS {
        let upid = api
            .call(
                job.method.clone(),
                &job.path,
                &[],
                &job.form,
                Retry::Idempotent,
            )
            .await
            .map_err(Failure::Call)?;
        match wait(api, &upid, &job.what, job.timeout, job.timeout_field).await {
            Ok(()) => return Ok(()),
            Err(failed) if job.done_if.contains(&failed.outcome) => {
                tracing::info!(exit = %failed.exitstatus, "{}: already done", job.what);
                return Ok(());
            }
            Err(failed) if failed.outcome == Outcome::LockTimeout && attempt < ATTEMPTS => {
                tracing::warn!(attempt, exit = %failed.exitstatus, "{}: the task timed out on the config lock; running it again", job.what);
                pause(attempt).await;
            }
            Err(failed) => return Err(Failure::Task(failed)),
        }
    }
    unreachable!("the last attempt returns")
}

/// A growing pause before trying again, different between processes so
/// that concurrent runs that collided do not collide again.
pub async fn pause(attempt: u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = u64::from((nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 150);
    tokio::time::sleep(Duration::from_millis(
        50 * u64::from(attempt.min(6)) + jitter,
    ))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_classified() {
        for (exit, outcome) in [
            ("OK", Outcome::Done),
            ("WARNINGS: 2", Outcome::Done),
            (
                "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout",
                Outcome::LockTimeout,
            ),
            (
                "clone failed: can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout",
                Outcome::LockTimeout,
            ),
            ("VM 101 already running", Outcome::AlreadyRunning),
            (
                "Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist",
                Outcome::AlreadyGone,
            ),
            (
                "unable to create VM 101: config file already exists",
                Outcome::VmidClash,
            ),
            ("start failed: QEMU exited with code 1", Outcome::Failed),
            ("VM quit/powerdown failed - got timeout", Outcome::Failed),
        ] {
            assert_eq!(classify(exit), outcome, "{exit}");
        }
    }

    #[test]
    fn node_from_upid() {
        assert_eq!(
            node_of("UPID:pve1:00001234:0000ABCD:65000000:qmclone:9000:deployer@pve!fedi:"),
            Some("pve1")
        );
        assert_eq!(node_of("nope"), None);
    }
}
