//! One run of the local deployment: a state directory, the backends
//! started in it, the driver and its state. The binary and the end-to-end
//! test both go through it, phase by phase; between phases the backends
//! are up for whoever wants to look at them.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::backends::Backends;
use crate::engine::{Engine, Report};
use crate::graph::Configurator;
use crate::state::StateFile;
use crate::{netns, repo};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the run keeps its state, keys, backends and provider logs
    /// (must be empty or not exist). `None`: a new directory under the
    /// temporary directory, kept.
    pub state_dir: Option<PathBuf>,
    /// Where the provider executables `fedi-<provider>` are.
    pub providers_dir: PathBuf,
    /// See [`Engine::max_jobs`].
    pub max_jobs: Option<NonZeroUsize>,
    /// See [`Engine::provider_log`].
    pub provider_log: Option<String>,
}

/// A running local deployment.
pub struct Session {
    /// The state directory (canonical).
    pub dir: PathBuf,
    /// The backends, stopped when the session is dropped.
    pub backends: Backends,
    /// The driver.
    pub engine: Engine,
    /// The deployment state (`dir/state.json`).
    pub state: StateFile,
}

impl Session {
    /// Sets up the private network namespace this process must run in
    /// (see [`netns`]), starts the backends and opens an empty state.
    pub fn start(options: Options) -> Result<Session> {
        if !netns::inside() {
            bail!(
                "the local deployment must run in a private network namespace of its own (see fedi_local::netns)"
            );
        }
        netns::set_up().context("cannot set up the private network namespace")?;
        let dir = match &options.state_dir {
            Some(dir) => {
                if dir.exists()
                    && std::fs::read_dir(dir)
                        .with_context(|| {
                            format!("cannot read the state directory {}", dir.display())
                        })?
                        .next()
                        .is_some()
                {
                    bail!(
                        "the state directory {} is not empty; the backends of an earlier run are gone with it, so start in a new directory",
                        dir.display()
                    );
                }
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create the state directory {}", dir.display())
                })?;
                dir.clone()
            }
            None => tempfile::Builder::new()
                .prefix("fedi-local-")
                .tempdir()
                .context("cannot make a state directory under the temporary directory")?
                .keep(),
        };
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let backends = Backends::start(&dir, &repo().join("examples/local/hosting.nix"))
            .context("cannot start the local backends")?;
        let engine = Engine {
            configurator: Configurator {
                eval_nix: repo().join("nix/configurator/eval.nix"),
                panel: PathBuf::new(),
                hosting: backends.hosting_file.clone(),
            },
            providers_dir: options.providers_dir,
            system_builder: repo().join("local/nix/service-system.nix"),
            work_dir: dir.clone(),
            max_jobs: options.max_jobs,
            provider_log: options.provider_log,
        };
        let state = StateFile::open(&dir.join("state.json"))?;
        Ok(Session {
            dir,
            backends,
            engine,
            state,
        })
    }

    /// Applies the operator's panel `panel` (a JSON file).
    pub fn apply(&mut self, panel: &Path) -> Result<Report> {
        self.engine.configurator.panel = panel.to_path_buf();
        self.engine
            .apply(&mut self.state)
            .with_context(|| format!("applying the panel {} failed", panel.display()))
    }

    /// Deletes everything the state has.
    pub fn destroy(&mut self) -> Result<Report> {
        self.engine
            .destroy(&mut self.state)
            .context("destroying the deployment failed")
    }

    /// Where the provider logs are (`<resource>.<action>.log`).
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}
