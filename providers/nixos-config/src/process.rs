//! Running the well-known tools (`ssh`, `nix`) as child processes: output
//! always captured (stdout is the protocol channel, a child's stdout must
//! never reach it), optional input on stdin, and a deadline after which the
//! child is killed.

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished (or killed) child left behind.
#[derive(Debug)]
pub struct Finished {
    /// Exit status; `None` when the deadline killed it.
    pub status: Option<ExitStatus>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Finished {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Its exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Whether the deadline killed it.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

/// Runs `command` to completion, writing `input` to its stdin, killing it
/// after `deadline`. Fails only when it cannot be started.
pub fn run(
    command: &mut Command,
    input: Option<&[u8]>,
    deadline: Duration,
) -> std::io::Result<Finished> {
    run_watching(command, input, deadline, None)
}

/// Called with each line of a child's stdout as it arrives.
pub type LineWatcher = Box<dyn Fn(&str) + Send>;

/// Like [`run`], calling `watch` with each line of stdout as it arrives
/// (e.g. to act on "started" before the command is done).
pub fn run_watching(
    command: &mut Command,
    input: Option<&[u8]>,
    deadline: Duration,
    watch: Option<LineWatcher>,
) -> std::io::Result<Finished> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.unwrap_or_default().to_vec();
        std::thread::spawn(move || {
            // A child that exits early closes the pipe; that is its answer.
            let _ = stdin.write_all(&input);
        })
    });
    let stdout = reader(&mut child, true, watch);
    let stderr = reader(&mut child, false, None);
    let status = wait(&mut child, deadline)?;
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn reader(
    child: &mut Child,
    stdout: bool,
    watch: Option<LineWatcher>,
) -> std::thread::JoinHandle<String> {
    let pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("piped stdout"))
    } else {
        Box::new(child.stderr.take().expect("piped stderr"))
    };
    std::thread::spawn(move || {
        let mut pipe = std::io::BufReader::new(pipe);
        let mut bytes = Vec::new();
        loop {
            let start = bytes.len();
            match pipe.read_until(b'\n', &mut bytes) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(watch) = &watch {
                        watch(String::from_utf8_lossy(&bytes[start..]).trim_end());
                    }
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait(child: &mut Child, deadline: Duration) -> std::io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The last `lines` non-empty lines of `text`, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// `text` quoted for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_feeds_input() {
        let done = run(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            Some(b"in"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(done.stdout, "in");
        assert_eq!(done.stderr, "err\n");
        assert_eq!(done.code(), Some(3));
    }

    #[test]
    fn deadline_kills() {
        let start = Instant::now();
        let done = run(
            Command::new("sleep").arg("30"),
            None,
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(done.timed_out());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn quoting_survives_the_shell() {
        let text = "it's a \"test\" $HOME `x`";
        let done = run(
            Command::new("sh").args(["-c", &format!("printf %s {}", shell_quote(text))]),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(done.stdout, text);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b\nc");
    }
}
