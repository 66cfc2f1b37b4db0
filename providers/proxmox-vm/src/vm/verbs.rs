//! The VM's task-starting API calls as typed verbs, each sending its
//! request and waiting for its task through [`task::run`] (config lock
//! timeouts run again, a start sent again that ends "already running" is
//! done); destroy looks first after a lost answer. bpg's
//! `proxmox/nodes/vms/vms.go` has the same shape.

use super::*;

/// One VM's verbs: its node, VMID and the inputs (for the timeouts).
pub(super) struct VmApi<'a> {
    api: &'a Api,
    node: &'a str,
    vmid: u32,
    inputs: &'a VmInputs,
}

impl<'a> VmApi<'a> {
    pub(super) fn new(api: &'a Api, node: &'a str, vmid: u32, inputs: &'a VmInputs) -> VmApi<'a> {
        VmApi {
            api,
            node,
            vmid,
            inputs,
        }
    }

    /// Sends `method nodes/{node}/qemu/{vmid}/{verb}` and waits for its
    /// task, for at most `timeout` (set by the input `timeout_field`).
    async fn run(
        &self,
        method: Method,
        verb: &str,
        form: Vec<(String, String)>,
        what: String,
        (timeout, timeout_field): (Duration, &str),
        done_if: &[Outcome],
    ) -> Result<(), Failure> {
        let job = Job {
            method,
            path: format!("nodes/{}/qemu/{}/{verb}", self.node, self.vmid),
            form,
            what,
            timeout,
            timeout_field,
            done_if,
        };
        task::run(self.api, &job).await
    }

    fn task_limit(&self) -> (Duration, &'static str) {
        (
            self.inputs.timeout(self.inputs.timeouts.task_seconds),
            "timeouts.taskSeconds",
        )
    }

    /// Whether the VM runs (`status/current`).
    pub(super) async fn is_running(&self) -> Result<bool> {
        let status = self
            .api
            .get(
                &format!("nodes/{}/qemu/{}/status/current", self.node, self.vmid),
                &[],
            )
            .await?;
        Ok(status["status"] == "running")
    }

    /// Migrates the VM to `target` (online, with its local disks, when it
    /// runs).
    pub(super) async fn migrate(&self, target: &str, running: bool) -> Result<()> {
        let mut form = vec![("target".to_string(), target.to_string())];
        if running {
            form.push(("online".into(), "1".into()));
            form.push(("with-local-disks".into(), "1".into()));
        }
        let what = format!("migrating VM {} to `{target}`", self.vmid);
        let limit = (
            self.inputs.timeout(self.inputs.timeouts.migrate_seconds),
            "timeouts.migrateSeconds",
        );
        self.run(Method::POST, "migrate", form, what.clone(), limit, &[])
            .await
            .map_err(|f| f.error(&what))
    }

    /// `POST config` (the form holds the keys, `delete` and `digest`); the
    /// caller handles a stale digest.
    pub(super) async fn configure(&self, form: Vec<(String, String)>) -> Result<(), Failure> {
        let what = format!("configuring VM {}", self.vmid);
        self.run(Method::POST, "config", form, what, self.task_limit(), &[])
            .await
    }

    /// Grows disk `slot` to `gib` GiB (an absolute size, so sending it
    /// again changes nothing).
    pub(super) async fn resize(&self, slot: &str, gib: u64) -> Result<()> {
        let form = vec![
            ("disk".to_string(), slot.to_string()),
            ("size".to_string(), format!("{gib}G")),
        ];
        let what = format!("growing `{slot}` of VM {} to {gib} GiB", self.vmid);
        self.run(
            Method::PUT,
            "resize",
            form,
            what.clone(),
            self.task_limit(),
            &[],
        )
        .await
        .map_err(|f| f.error(&what))
    }

    /// Starts the VM; a start sent again (after a lost answer) ends
    /// "already running", which is done.
    pub(super) async fn start(&self) -> Result<()> {
        let what = format!("starting VM {}", self.vmid);
        self.run(
            Method::POST,
            "status/start",
            Vec::new(),
            what.clone(),
            self.task_limit(),
            &[Outcome::AlreadyRunning],
        )
        .await
        .map_err(|f| f.error(&what))
    }

    /// Shuts the VM down gracefully (Proxmox stops it when the shutdown
    /// times out), and stops it if the shutdown task failed.
    pub(super) async fn stop(&self) -> Result<()> {
        let vmid = self.vmid;
        let seconds = self.inputs.timeouts.shutdown_seconds;
        let form = vec![
            ("timeout".to_string(), seconds.to_string()),
            ("forceStop".to_string(), "1".to_string()),
        ];
        let shutdown = self
            .run(
                Method::POST,
                "status/shutdown",
                form,
                format!("shutting VM {vmid} down"),
                (
                    Duration::from_secs(seconds + 30),
                    "timeouts.shutdownSeconds",
                ),
                &[],
            )
            .await;
        if let Err(failure) = shutdown {
            // A shutdown sent again after a lost answer finds the VM stopped.
            if !self.is_running().await? {
                tracing::info!(vmid, "the VM is stopped");
                return Ok(());
            }
            let e = failure.error("shutting the VM down");
            tracing::warn!(vmid, error = %e, "graceful shutdown failed; stopping the VM");
            let what = format!("stopping VM {vmid}");
            self.run(
                Method::POST,
                "status/stop",
                Vec::new(),
                what.clone(),
                self.task_limit(),
                &[],
            )
            .await
            .map_err(|f| f.error(&what))?;
        }
        tracing::info!(vmid, "the VM is stopped");
        Ok(())
    }

    /// Destroys the VM with its disks. The DELETE is not sent again blindly:
    /// after a lost answer the VM is looked at first (gone: done; `lock:
    /// destroyed`: the destroy runs, wait for it; otherwise it never arrived,
    /// send it again). A destroy that ends "does not exist" (sent again while
    /// the first ran) is success once the VM is gone.
    pub(super) async fn destroy(&self) -> Result<()> {
        let (api, node, vmid, inputs) = (self.api, self.node, self.vmid, self.inputs);
        let path = format!("nodes/{node}/qemu/{vmid}");
        let query = [
            ("purge", "1".to_string()),
            ("destroy-unreferenced-disks", "1".to_string()),
        ];
        let what = format!("destroying VM {vmid}");
        let timeout = inputs.timeout(inputs.timeouts.task_seconds);
        for attempt in 1..=ATTEMPTS {
            match api
                .call(Method::DELETE, &path, &query, &[], Retry::Once)
                .await
            {
                Ok(upid) => {
                    match task::wait(api, &upid, &what, timeout, "timeouts.taskSeconds").await {
                        Ok(()) => return Ok(()),
                        Err(failed) if failed.outcome == Outcome::AlreadyGone => {
                            tracing::info!(vmid, exit = %failed.exitstatus, "an earlier destroy got there first");
                            return self.wait_gone(node).await;
                        }
                        Err(failed)
                            if failed.outcome == Outcome::LockTimeout && attempt < ATTEMPTS =>
                        {
                            tracing::warn!(vmid, exit = %failed.exitstatus, "the destroy timed out on the config lock; trying again");
                            task::pause(attempt).await;
                        }
                        Err(failed) => return Err(failed.error),
                    }
                }
                Err(e) if e.is_missing_vm() => return Ok(()),
                Err(e) if e.is_lost() => {
                    tracing::warn!(vmid, reason = %e.reason, "the answer to the DELETE was lost; looking at the VM");
                    match locate(api, node, vmid).await? {
                        None => return Ok(()),
                        Some(l)
                            if text(&l.config.current, "lock").as_deref() == Some("destroyed") =>
                        {
                            return self.wait_gone(&l.node).await;
                        }
                        Some(_) if attempt < ATTEMPTS => task::pause(attempt).await,
                        Some(_) => return Err(e.error.context(what)),
                    }
                }
                Err(e) => return Err(e.error.context(what)),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Waits, within `timeouts.taskSeconds`, until the VM's config is gone.
    async fn wait_gone(&self, node: &str) -> Result<()> {
        let (api, vmid, inputs) = (self.api, self.vmid, self.inputs);
        let deadline = Instant::now() + inputs.timeout(inputs.timeouts.task_seconds);
        let mut pause = task::FIRST_POLL;
        while locate(api, node, vmid).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(Error::unavailable(format!(
                    "VM {vmid} is still being destroyed after {}s",
                    inputs.timeouts.task_seconds
                ))
                .with_field("timeouts.taskSeconds")
                .with_hint("the destroy goes on in Proxmox (see the node's task log); run the delete again later"));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(task::MAX_POLL);
        }
        Ok(())
    }
}
