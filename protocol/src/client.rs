//! Driving a provider executable the way NixOps4 does: start it, write one
//! request line, read one response line, close stdin, wait for a clean exit.
//!
//! Used by `fedi-resource-runner` and the test kit.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::wire::{Request, Response};

/// What went wrong talking to a provider.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The executable could not be started.
    #[error("cannot start provider `{exe}`")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the pipes failed.
    #[error("talking to the provider failed")]
    Io(#[from] std::io::Error),
    /// The provider closed stdout without answering.
    #[error("the provider exited without answering ({status}); see its log above")]
    NoResponse {
        /// How it exited.
        status: ExitStatus,
    },
    /// The provider answered with something that is not a response.
    #[error(
        "the provider answered with a line that is not a protocol response ({problem}): {line}"
    )]
    MalformedResponse {
        /// The line, as received.
        line: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The provider wrote more to stdout than its responses.
    #[error("the provider wrote to stdout after its last response: {extra:?}")]
    StrayOutput {
        /// What it wrote.
        extra: String,
    },
    /// The provider exited with a failure status after stdin closed.
    #[error("the provider exited with {status} after its work was done")]
    BadExit {
        /// How it exited.
        status: ExitStatus,
    },
}

/// A running provider process.
pub struct ProviderClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ProviderClient {
    /// Starts `exe` with no arguments; its stderr is inherited (the log).
    pub fn spawn(exe: impl Into<PathBuf>) -> Result<ProviderClient, ClientError> {
        let exe = exe.into();
        let mut command = Command::new(&exe);
        command.stderr(Stdio::inherit());
        Self::spawn_command(command).map_err(|e| match e {
            ClientError::Io(source) => ClientError::Spawn { exe, source },
            other => other,
        })
    }

    /// Starts a prepared command (stdin and stdout are piped here).
    pub fn spawn_command(mut command: Command) -> Result<ProviderClient, ClientError> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(ProviderClient {
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    /// Sends one request and reads its response.
    pub async fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let line = serde_json::to_string(request).expect("requests always serialize");
        let answer = self.request_line(line.as_bytes()).await?;
        serde_json::from_str(&answer).map_err(|e| ClientError::MalformedResponse {
            line: answer.clone(),
            problem: e.to_string(),
        })
    }

    /// Sends raw bytes as one line (a newline is appended) and returns the
    /// answer line, without its newline.
    pub async fn request_line(&mut self, line: &[u8]) -> Result<String, ClientError> {
        let stdin = self.stdin.as_mut().expect("stdin is open until close()");
        stdin.write_all(line).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await?;
        let mut answer = String::new();
        let read = self.stdout.read_line(&mut answer).await?;
        if read == 0 {
            let status = self.child.wait().await?;
            return Err(ClientError::NoResponse { status });
        }
        if answer.ends_with('\n') {
            answer.pop();
        }
        Ok(answer)
    }

    /// Closes stdin (telling the provider to exit), checks that nothing more
    /// was written to stdout, and waits for a successful exit.
    pub async fn close(self) -> Result<(), ClientError> {
        self.close_measured().await.map(|_| ())
    }

    /// [`close`](Self::close), also returning the CPU time (user + system)
    /// the provider process used, and separately the CPU time of the
    /// processes it ran and waited for (ssh, nix, ...), when `/proc` tells
    /// them (Linux).
    pub async fn close_measured(mut self) -> Result<Option<CpuTime>, ClientError> {
        drop(self.stdin.take());
        let mut extra = String::new();
        self.stdout.read_to_string(&mut extra).await?;
        // Not waited for yet, the exited provider stays a zombie whose
        // /proc entry holds its final times.
        let cpu = match self.child.id() {
            Some(pid) => zombie_cpu_time(pid).await,
            None => None,
        };
        let status = self.child.wait().await?;
        if !extra.is_empty() {
            return Err(ClientError::StrayOutput { extra });
        }
        if !status.success() {
            return Err(ClientError::BadExit { status });
        }
        Ok(cpu)
    }
}

/// CPU time of a finished provider process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// The provider's own (user + system).
    pub own: Duration,
    /// Of the processes it ran and waited for (user + system).
    pub children: Duration,
}

/// Waits (up to 5 s) until `pid` has exited and reads its times from
/// `/proc/<pid>/stat`; `None` where there is no `/proc`.
async fn zombie_cpu_time(pid: u32) -> Option<CpuTime> {
    let path = format!("/proc/{pid}/stat");
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    for _ in 0..5000 {
        let stat = std::fs::read_to_string(&path).ok()?;
        // Fields after the command name, which is in parentheses and may
        // hold anything: state, ppid, ..., utime (12th), stime, cutime, cstime.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
            let seconds = |t: u64| Duration::from_secs_f64(t as f64 / ticks);
            return Some(CpuTime {
                own: seconds(field(11)? + field(12)?),
                children: seconds(field(13)? + field(14)?),
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Starts `exe`, sends one request, closes, and returns the response.
pub async fn one_shot(exe: impl Into<PathBuf>, request: &Request) -> Result<Response, ClientError> {
    let mut client = ProviderClient::spawn(exe)?;
    let response = client.request(request).await?;
    client.close().await?;
    Ok(response)
}
