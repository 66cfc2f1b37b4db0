//! `fedi-local`: the suite's main job on a local default.
//!
//! Starts the local backends (Garage, Knot DNS, the Proxmox VE API test
//! server whose VMs boot as SSH/Nix guests) in a private network namespace,
//! then applies the operator's panel the way NixOps4 does ([`engine`]),
//! applies a changed panel (an application disabled, a VM resized), and
//! destroys the deployment; after each phase it checks the backends against
//! the state and prints the operator's and the provider's view.

#![allow(clippy::print_stdout)] // the progress and the views are this tool's output

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;

use fedi_local::backends::{self, Backends};
use fedi_local::engine::{self, Action, Report, progress};
use fedi_local::session::{Options, Session};
use fedi_local::state::State;
use fedi_local::verify::{self, Checked};
use fedi_local::{guests, netns, repo};

/// Deploy the example operator configuration onto local backends, change
/// it, and tear it down, checking every step.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The operator's panel JSON to apply first.
    #[arg(long, default_value_os_t = repo().join("examples/fediversity/panel.json"))]
    panel: PathBuf,
    /// The changed panel JSON to apply next.
    #[arg(long, default_value_os_t = repo().join("examples/local/panel-changed.json"))]
    changed_panel: PathBuf,
    /// Where the run keeps its state, keys, backends and provider logs
    /// (must not exist yet). Default: a new directory under /tmp, kept.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where the provider executables are. Default: beside this one.
    #[arg(long)]
    providers_dir: Option<PathBuf>,
    /// Write a JSON report of every phase here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Stop after the changed panel (do not destroy).
    #[arg(long)]
    keep: bool,
    /// Run at most this many provider operations at once. Default: every
    /// ready one side by side, as NixOps4 does; 1 applies one after another.
    #[arg(long)]
    jobs: Option<NonZeroUsize>,
    /// The providers' log filter (their `FEDI_LOG`: `error` ... `trace`, or
    /// directives). Default: this environment's `FEDI_LOG`, else `info`.
    #[arg(long, value_name = "FILTER")]
    provider_log: Option<String>,
}

/// One phase's result, for the report.
#[derive(Debug, Serialize)]
struct Phase {
    name: String,
    panel: Option<PathBuf>,
    report: Report,
    checked: Checked,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !netns::inside() {
        return reexec_in_private_network();
    }
    exit(run(cli))
}

fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}`: the whole chain, what was being done down to the cause.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this program again in a new network namespace (needs root): the
/// VMs' addresses and every backend's port live there and vanish with it.
fn reexec_in_private_network() -> ExitCode {
    let status = std::env::current_exe()
        .context("cannot find this program")
        .and_then(|exe| {
            netns::command(&exe, std::env::args_os().skip(1))
                .status()
                .context("cannot run unshare (util-linux)")
        });
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            // The run in the namespace has said what failed.
            if s.code() == Some(1) && !netns::is_root() {
                eprintln!(
                    "hint: fedi-local makes a private network namespace and mount namespaces for its guests: run it as root"
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => exit(Err(e)),
    }
}

fn run(cli: Cli) -> Result<()> {
    let providers_dir = match cli.providers_dir {
        Some(d) => d,
        None => std::env::current_exe()
            .context("cannot find this program (the providers are beside it)")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let mut session = Session::start(Options {
        state_dir: cli.state_dir.clone(),
        providers_dir,
        max_jobs: cli.jobs,
        provider_log: cli.provider_log.clone(),
    })?;
    let dir = session.dir.clone();
    let backends = &session.backends;
    println!(
        "== Local backends (private network namespace; state in {})",
        dir.display()
    );
    println!("  Proxmox VE API test server  {}", backends.pve.endpoint());
    println!(
        "  Garage admin API            http://127.0.0.1:{}",
        backends.garage.admin_port
    );
    println!(
        "  Knot DNS (zone {})     127.0.0.1 port {}",
        backends::ZONE,
        backends.dns.port
    );
    println!(
        "  guests boot as SSH/Nix hosts on {} (10.77.0.0/16)",
        guests::BRIDGE
    );

    let mut records_seen = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut phases = Vec::new();

    for (name, panel) in [
        ("apply", &cli.panel),
        ("apply changed panel", &cli.changed_panel),
    ] {
        println!("\n== {name}: {}", panel.display());
        let report = session.apply(panel)?;
        let checked = check(&session.backends, &session.state.state, &mut records_seen)
            .with_context(|| format!("after {name}"))?;
        check_secrets(&session.backends, &dir, &mut secrets)
            .with_context(|| format!("after {name}"))?;
        operator_view(&session.state.state, &report, panel);
        provider_view(&report);
        phases.push(Phase {
            name: name.into(),
            panel: Some(panel.clone()),
            report,
            checked,
        });
    }
    if !cli.keep {
        println!("\n== destroy");
        let report = session.destroy()?;
        let checked = check(&session.backends, &session.state.state, &mut records_seen)
            .context("after destroy")?;
        check_secrets(&session.backends, &dir, &mut secrets).context("after destroy")?;
        provider_view(&report);
        phases.push(Phase {
            name: "destroy".into(),
            panel: None,
            report,
            checked,
        });
    }
    if let Some(path) = &cli.report {
        let text = serde_json::to_string_pretty(&phases).context("cannot serialize the report")?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    println!("\nState, keys and provider logs: {}", dir.display());
    Ok(())
}

/// Verifies the backends against the state and prints the outcome.
fn check(
    backends: &Backends,
    state: &State,
    records_seen: &mut BTreeSet<(String, String)>,
) -> Result<Checked> {
    for r in state
        .resources
        .values()
        .filter(|r| r.provider == "dns-record")
    {
        let field = |k: &str| r.input(k).as_str().unwrap_or_default().to_string();
        records_seen.insert((field("name"), field("type")));
    }
    match verify::verify(backends, state, records_seen) {
        Ok(checked) => {
            progress(&format!(
                "  checked   the backends hold exactly the state: {} VMs, {} buckets, {} keys, {} records, {} deployed systems; nothing orphaned",
                checked.vms.len(),
                checked.buckets.len(),
                checked.keys.len(),
                checked.records.len(),
                checked.deployments.len()
            ));
            Ok(checked)
        }
        Err(problems) => bail!(
            "the backends do not match the state:\n  {}",
            problems.join("\n  ")
        ),
    }
}

/// Fails when a secret of the run is in a provider log.
fn check_secrets(backends: &Backends, dir: &Path, secrets: &mut BTreeSet<String>) -> Result<()> {
    verify::collect_secrets(backends, dir, secrets);
    let leaks = verify::leaks(secrets, &dir.join("logs"));
    if leaks.is_empty() {
        progress(&format!(
            "  checked   none of the run's {} secrets is in a provider log",
            secrets.len()
        ));
        Ok(())
    } else {
        bail!("{}", leaks.join("\n"))
    }
}

/// What the operator got: URLs, addresses, buckets, the admin account.
fn operator_view(state: &State, report: &Report, panel: &Path) {
    let panel: Value = std::fs::read_to_string(panel)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    println!(
        "\n  Operator's view ({})",
        panel["domain"].as_str().unwrap_or("?")
    );
    for (app, url) in &report.urls {
        println!("    {app:<9} {url}");
        let get = |name: String| state.resources.get(&name);
        for ty in ["a", "aaaa"] {
            if let Some(r) = get(format!("{app}-dns-{ty}")) {
                let values: Vec<String> = r
                    .output("values")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                println!(
                    "              DNS {:<4} {}",
                    ty.to_uppercase(),
                    values.join(" ")
                );
            }
        }
        if let Some(vm) = get(format!("{app}-vm")) {
            println!(
                "              VM       {} (vmid {}, {} cores, {} MiB)",
                vm.input("name").as_str().unwrap_or("?"),
                vm.output("vmid"),
                vm.input("cores"),
                vm.input("memory")
            );
        }
        for (name, r) in &state.resources {
            if r.type_ == "bucket" && name.starts_with(&format!("{app}-")) {
                println!(
                    "              bucket   {} {}",
                    r.output("name").as_str().unwrap_or("?"),
                    r.output("websiteUrl").as_str().unwrap_or("")
                );
            }
        }
    }
    if let Some(file) = &report.admin_password_file {
        println!(
            "    admin     {} <{}>, password in {}",
            panel["admin"]["name"].as_str().unwrap_or("?"),
            panel["admin"]["email"].as_str().unwrap_or("?"),
            file.display()
        );
    }
}

/// Where the time went: evaluation, builds, each provider (wall time, CPU
/// in our provider process, CPU in the tools it ran, the rest waiting).
fn provider_view(report: &Report) {
    println!("\n  Provider's view");
    let evaluation: Duration = report.evaluations.iter().sum();
    println!(
        "    evaluation     {:>2} x nix-instantiate       {:>7.2} s",
        report.evaluations.len(),
        evaluation.as_secs_f64()
    );
    let builds: f64 = report.builds.iter().map(|b| b.1).sum();
    if !report.builds.is_empty() {
        println!(
            "    system builds  {:>2} x nix-build             {builds:>7.2} s",
            report.builds.len()
        );
    }
    let mut by_provider: BTreeMap<&str, Vec<&engine::Operation>> = BTreeMap::new();
    for op in &report.operations {
        by_provider
            .entry(op.provider.as_str())
            .or_default()
            .push(op);
    }
    println!(
        "    {:<14} {:>3} {:>9} {:>9} {:>9} {:>8}",
        "provider", "ops", "wall s", "ours s", "tools s", "waiting"
    );
    for (provider, ops) in &by_provider {
        let wall: Duration = ops.iter().map(|o| o.wall).sum();
        let own: f64 = ops.iter().filter_map(|o| o.cpu_own).sum();
        let tools: f64 = ops.iter().filter_map(|o| o.cpu_tools).sum();
        let wall_s = wall.as_secs_f64();
        let waiting = (wall_s - own - tools).max(0.0) / wall_s.max(1e-9);
        let actions: BTreeSet<&str> = ops
            .iter()
            .map(|o| match o.action {
                Action::Create => "create",
                Action::Update => "update",
                Action::Delete => "delete",
            })
            .collect();
        println!(
            "    {provider:<14} {:>3} {:>9.2} {:>9.3} {:>9.3} {:>7.0}%  ({})",
            ops.len(),
            wall.as_secs_f64(),
            own,
            tools,
            waiting * 100.0,
            actions.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if !report.unchanged.is_empty() {
        println!(
            "    unchanged (no provider process): {}",
            report.unchanged.join(", ")
        );
    }
    println!(
        "    total wall time                          {:>7.2} s",
        report.total.as_secs_f64()
    );
}
