//! What NixOps4 does with a deployment, done here because NixOps4 cannot be
//! built on this machine: evaluate the configurator, start one provider
//! process per resource operation (the resources that are ready run side by
//! side), feed their outputs into the next evaluation, record the state
//! after every operation, until nothing is pending; then delete, dependents
//! first, what the configuration no longer has.
//!
//! A resource whose inputs did not change is left alone (no process); one
//! whose provider or type changed is deleted and created anew.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use fedi_protocol::client::{CpuTime, ProviderClient};
use fedi_protocol::wire::{
    CreateResourceRequest, DeleteResourceRequest, ExtantResource, Properties, Request, Response,
    UpdateResourceRequest,
};
use serde::Serialize;
use serde_json::Value;

use crate::graph::Configurator;
use crate::state::{Applied, StateFile};

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Created.
    Create,
    /// Updated in place.
    Update,
    /// Deleted.
    Delete,
}

impl Action {
    fn past(self) -> &'static str {
        match self {
            Action::Create => "created",
            Action::Update => "updated",
            Action::Delete => "deleted",
        }
    }
}

/// One provider operation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The resource.
    pub resource: String,
    /// Its provider.
    pub provider: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_: String,
    /// What was done.
    pub action: Action,
    /// Wall time of the provider process, start to exit.
    #[serde(with = "seconds")]
    pub wall: Duration,
    /// CPU seconds of the provider process itself (our code).
    pub cpu_own: Option<f64>,
    /// CPU seconds of the tools it ran and waited for (ssh, nix).
    pub cpu_tools: Option<f64>,
}

/// What one apply (or destroy) did, with timings.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Each evaluation of the configurator.
    #[serde(with = "seconds_list")]
    pub evaluations: Vec<Duration>,
    /// Each NixOS system build, by application.
    pub builds: Vec<(String, f64)>,
    /// The provider operations, in the order they finished.
    pub operations: Vec<Operation>,
    /// Resources whose inputs did not change.
    pub unchanged: Vec<String>,
    /// Wall time of the whole apply.
    #[serde(with = "seconds")]
    pub total: Duration,
    /// The operator's URLs, by application.
    pub urls: BTreeMap<String, String>,
    /// Where the operator's admin password is.
    pub admin_password_file: Option<PathBuf>,
}

mod seconds {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod seconds_list {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(d.iter().map(Duration::as_secs_f64))
    }
}

/// The deployment driver.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The configurator and its inputs.
    pub configurator: Configurator,
    /// Where the provider executables `fedi-<provider>` are.
    pub providers_dir: PathBuf,
    /// The Nix expression building a deployment's system from its
    /// `service` (stand-in for the NixOS module-system glue).
    pub system_builder: PathBuf,
    /// Scratch files and provider logs.
    pub work_dir: PathBuf,
    /// How many provider operations may run at once; `None`: every ready
    /// one (as NixOps4 does). One gives the sequential baseline the
    /// benchmark compares with.
    pub max_jobs: Option<NonZeroUsize>,
    /// The providers' log filter (`FEDI_LOG`, e.g. `trace`); `None`: what
    /// this process's environment says.
    pub provider_log: Option<String>,
}

/// Operations that failed side by side: each with its own causes.
#[derive(Debug)]
pub struct Failures(pub Vec<anyhow::Error>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} operations failed:", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e:#}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failures {}

/// One error for what failed: the single failure itself (its causes
/// intact), or all of them.
fn combine(mut failures: Vec<anyhow::Error>) -> Result<()> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(Failures(failures).into()),
    }
}

/// A provider operation to run.
struct Job {
    resource: String,
    provider: String,
    type_: String,
    action: Action,
    request: Request,
    /// What to record on success (the new inputs); `None` for a delete.
    record: Option<(Properties, Vec<String>)>,
}

impl Engine {
    /// Applies the configuration: creates and updates until nothing is
    /// pending, then deletes what the configuration no longer has.
    pub fn apply(&self, state: &mut StateFile) -> Result<Report> {
        let started = Instant::now();
        let mut report = Report::default();
        let mut settled: BTreeMap<String, Properties> = BTreeMap::new();
        let mut systems: BTreeMap<String, String> = BTreeMap::new();
        let mut secrets_ready = false;
        let graph = loop {
            let (graph, took) = self
                .configurator
                .evaluate(&settled, &systems, &self.work_dir)?;
            report.evaluations.push(took);
            if !secrets_ready {
                ensure_generated_secret(
                    &graph.seams.admin_password.file,
                    graph.seams.admin_password.bytes,
                )?;
                secrets_ready = true;
            }
            let buildable: Vec<(String, Value)> = graph
                .seams
                .nixos_systems
                .iter()
                .filter(|(app, s)| s.buildable && !systems.contains_key(*app))
                .filter_map(|(app, s)| {
                    let service = graph.resources.get(&s.resource)?.service.clone()?;
                    Some((app.clone(), service))
                })
                .collect();
            if !buildable.is_empty() {
                for (app, service) in buildable {
                    let built = Instant::now();
                    let path = self.build_system(&app, &service)?;
                    let took = built.elapsed();
                    progress(&format!(
                        "  built     {app} system {path} ({:.2} s)",
                        took.as_secs_f64()
                    ));
                    report.builds.push((app.clone(), took.as_secs_f64()));
                    systems.insert(app, path);
                }
                continue;
            }
            let todo: Vec<&String> = graph
                .ready
                .iter()
                .filter(|n| !settled.contains_key(*n))
                .collect();
            if todo.is_empty() {
                if graph.pending.is_empty() {
                    break graph;
                }
                bail!(
                    "stuck: {} wait for outputs no resource will give; see the configurator's graph",
                    graph.pending.join(", ")
                );
            }
            let mut jobs = Vec::new();
            for name in todo {
                let wanted = &graph.resources[name];
                match state.state.resources.get(name) {
                    Some(old) if old.provider == wanted.provider && old.type_ == wanted.type_ => {
                        if old.inputs == wanted.inputs {
                            report.unchanged.push(name.clone());
                            settled.insert(name.clone(), old.outputs.clone());
                            // Dependencies may have been renamed in the graph.
                            if old.depends_on != wanted.depends_on {
                                let mut applied = old.clone();
                                applied.depends_on = wanted.depends_on.clone();
                                state.record(name, applied)?;
                            }
                            continue;
                        }
                        jobs.push(Job {
                            resource: name.clone(),
                            provider: wanted.provider.clone(),
                            type_: wanted.type_.clone(),
                            action: Action::Update,
                            request: Request::UpdateResourceRequest(UpdateResourceRequest {
                                resource: extant(old),
                                input_properties: wanted.inputs.clone(),
                            }),
                            record: Some((wanted.inputs.clone(), wanted.depends_on.clone())),
                        });
                    }
                    old => {
                        if let Some(old) = old {
                            // Another provider or type under the same name:
                            // the old resource goes first.
                            let old = old.clone();
                            self.run(vec![delete_job(name, &old)], state, &mut report)?;
                        }
                        jobs.push(Job {
                            resource: name.clone(),
                            provider: wanted.provider.clone(),
                            type_: wanted.type_.clone(),
                            action: Action::Create,
                            request: Request::CreateResourceRequest(CreateResourceRequest {
                                type_: wanted.type_.clone(),
                                input_properties: wanted.inputs.clone(),
                                // The driver keeps every resource's state
                                // (NixOps4 with a state provider does).
                                is_stateful: true,
                            }),
                            record: Some((wanted.inputs.clone(), wanted.depends_on.clone())),
                        });
                    }
                }
            }
            for (name, outputs) in self.run(jobs, state, &mut report)? {
                settled.insert(name, outputs);
            }
        };
        let gone: BTreeSet<String> = state
            .state
            .resources
            .keys()
            .filter(|n| !graph.resources.contains_key(*n))
            .cloned()
            .collect();
        self.delete_all(gone, state, &mut report)?;
        state.state.systems = systems;
        state.save()?;
        report.urls = graph.urls;
        report.admin_password_file = Some(graph.seams.admin_password.file);
        report.total = started.elapsed();
        Ok(report)
    }

    /// Deletes every resource of the state, dependents first.
    pub fn destroy(&self, state: &mut StateFile) -> Result<Report> {
        let started = Instant::now();
        let mut report = Report::default();
        let all: BTreeSet<String> = state.state.resources.keys().cloned().collect();
        self.delete_all(all, state, &mut report)?;
        state.state.systems.clear();
        state.save()?;
        report.total = started.elapsed();
        Ok(report)
    }

    fn delete_all(
        &self,
        mut names: BTreeSet<String>,
        state: &mut StateFile,
        report: &mut Report,
    ) -> Result<()> {
        while !names.is_empty() {
            let first = state.deletable_first(&names);
            if first.is_empty() {
                bail!(
                    "the recorded dependencies of {} form a cycle; the state is damaged",
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            let jobs = first
                .iter()
                .map(|name| delete_job(name, &state.state.resources[name]))
                .collect();
            self.run(jobs, state, report)?;
            for name in first {
                names.remove(&name);
            }
        }
        Ok(())
    }

    /// Runs jobs side by side (at most [`Engine::max_jobs`] at once),
    /// recording each success in the state as it comes; returns the
    /// outputs of the creates and updates, or every failure once all have
    /// ended.
    fn run(
        &self,
        jobs: Vec<Job>,
        state: &mut StateFile,
        report: &mut Report,
    ) -> Result<Vec<(String, Properties)>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let logs = self.work_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let limit = self.max_jobs.map_or(usize::MAX, NonZeroUsize::get);
        let mut outputs = Vec::new();
        let mut failures: Vec<anyhow::Error> = Vec::new();
        runtime.block_on(async {
            let mut running = tokio::task::JoinSet::new();
            let mut waiting = jobs.into_iter();
            loop {
                while running.len() < limit {
                    let Some(job) = waiting.next() else { break };
                    let exe = self.providers_dir.join(format!("fedi-{}", job.provider));
                    let log =
                        logs.join(format!("{}.{:?}.log", job.resource, job.action).to_lowercase());
                    let log_filter = self.provider_log.clone();
                    running.spawn(async move {
                        let started = Instant::now();
                        let result =
                            exchange(&exe, &job.request, &log, log_filter.as_deref()).await;
                        (job, log, started.elapsed(), result)
                    });
                }
                let Some(joined) = running.join_next().await else {
                    break;
                };
                let (job, log, wall, result) = joined.expect("operations do not panic");
                match result {
                    Ok((response, cpu)) => {
                        progress(&format!(
                            "  {:<9} {:<28} {:<24} {:>6.2} s",
                            job.action.past(),
                            job.resource,
                            format!("{}/{}", job.provider, job.type_),
                            wall.as_secs_f64()
                        ));
                        let recorded = match (&job.record, response) {
                            (None, _) => state.forget(&job.resource),
                            (Some((inputs, depends_on)), Some(out)) => {
                                outputs.push((job.resource.clone(), out.clone()));
                                state.record(
                                    &job.resource,
                                    Applied {
                                        provider: job.provider.clone(),
                                        type_: job.type_.clone(),
                                        inputs: inputs.clone(),
                                        outputs: out,
                                        depends_on: depends_on.clone(),
                                    },
                                )
                            }
                            (Some(_), None) => {
                                Err(anyhow!("the provider answered without outputs"))
                            }
                        };
                        if let Err(e) = recorded {
                            failures.push(e.context(format!(
                                "{} ({:?}) succeeded but could not be recorded",
                                job.resource, job.action
                            )));
                        }
                        report.operations.push(Operation {
                            resource: job.resource,
                            provider: job.provider,
                            type_: job.type_,
                            action: job.action,
                            wall,
                            cpu_own: cpu.map(|c| c.own.as_secs_f64()),
                            cpu_tools: cpu.map(|c| c.children.as_secs_f64()),
                        });
                    }
                    Err(error) => {
                        progress(&format!("  FAILED    {} ({:?})", job.resource, job.action));
                        // The log exists once the provider was started.
                        let log = if log.exists() {
                            format!(" (provider log: {})", log.display())
                        } else {
                            String::new()
                        };
                        failures.push(error.context(format!(
                            "{} {} ({}/{}) failed{log}",
                            match job.action {
                                Action::Create => "creating",
                                Action::Update => "updating",
                                Action::Delete => "deleting",
                            },
                            job.resource,
                            job.provider,
                            job.type_,
                        )));
                    }
                }
            }
        });
        combine(failures)?;
        Ok(outputs)
    }

    /// Builds the stand-in NixOS system of `app` from its `service`.
    fn build_system(&self, app: &str, service: &Value) -> Result<String> {
        let output = fedi_testbeds::nix::command("nix-build")
            .args(["--no-out-link", "--quiet"])
            .arg(&self.system_builder)
            .args(["--argstr", "application", app])
            .args(["--argstr", "serviceJson", &service.to_string()])
            .stdin(Stdio::null())
            .output()
            .context("cannot run nix-build (install nix-bin)")?;
        if !output.status.success() {
            bail!(
                "building the system of {app} failed:\n{}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

fn extant(applied: &Applied) -> ExtantResource {
    ExtantResource {
        type_: applied.type_.clone(),
        input_properties: applied.inputs.clone(),
        output_properties: Some(applied.outputs.clone()),
    }
}

fn delete_job(name: &str, applied: &Applied) -> Job {
    Job {
        resource: name.to_string(),
        provider: applied.provider.clone(),
        type_: applied.type_.clone(),
        action: Action::Delete,
        request: Request::XDeleteResourceRequest(DeleteResourceRequest {
            resource: extant(applied),
        }),
        record: None,
    }
}

/// One provider process: one request, one response, a clean exit. The
/// provider's log (stderr) goes to `log`.
async fn exchange(
    exe: &Path,
    request: &Request,
    log: &Path,
    log_filter: Option<&str>,
) -> Result<(Option<Properties>, Option<CpuTime>)> {
    if !exe.is_file() {
        bail!(
            "the provider {} is not built; run `cargo build --workspace --bins`",
            exe.display()
        );
    }
    let log_file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = tokio::process::Command::new(exe);
    if let Some(filter) = log_filter {
        command.env(fedi_protocol::logging::LOG_ENV, filter);
    }
    // nixos-config's `nix copy` under the project's Nix configuration too.
    fedi_testbeds::nix::isolate_tokio(&mut command);
    command.stderr(log_file);
    let mut client = ProviderClient::spawn_command(command)
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let response = client
        .request(request)
        .await
        .context("no answer from the provider")?;
    let cpu = client
        .close_measured()
        .await
        .context("the provider did not end cleanly")?;
    match response {
        Response::CreateResourceResponse(r) => Ok((Some(r.output_properties), cpu)),
        Response::UpdateResourceResponse(r) => Ok((Some(r.output_properties), cpu)),
        Response::XDeleteResourceResponse(_) => Ok((None, cpu)),
        // The provider's message is the root cause; it says what to fix.
        Response::ErrorResponse(e) => Err(anyhow!(e.message)),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// The generated-secret seam: `bytes` random bytes, base64, in `file`
/// (mode 0600), made once and kept.
fn ensure_generated_secret(file: &Path, bytes: usize) -> Result<()> {
    if file.exists() {
        return Ok(());
    }
    let mut secret = vec![0u8; bytes];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut secret)
        // rand_core's error is no std error without its `std` feature.
        .map_err(|e| anyhow!("no randomness for the admin password: {e}"))?;
    let text = format!("{}\n", data_encoding::BASE64.encode(&secret));
    fedi_protocol::files::write_private_atomic(file, text.as_bytes())
        .with_context(|| format!("cannot write the admin password {}", file.display()))
}

/// A progress line for the user (stdout is this tool's report).
#[allow(clippy::print_stdout)]
pub fn progress(line: &str) {
    println!("{line}");
}
