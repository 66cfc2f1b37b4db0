//! The provider executable: command line, stdio discipline, request loop.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use tokio::runtime::Runtime;

use crate::resource::{ErasedResource, Resource, Typed};
use crate::schema::ProviderSchema;
use crate::wire::{Request, Response};

/// The longest request line accepted. Real requests are a few KiB; a state
/// event for a large deployment may reach a few MiB.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// A provider: a set of resource types served over stdio.
///
/// In a provider's `main`, build one with the [`provider!`](crate::provider)
/// macro, which fills in the version and executable name from Cargo
/// (`fedi_protocol::provider!("ssh-key", "SSH key pairs.")`); spelled out:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     fedi_protocol::Provider::new("example", "Example resources.", "0.1.0", "example-provider")
///         // .resource(MyResource::default())
///         .run()
/// }
/// ```
pub struct Provider {
    name: String,
    description: String,
    version: String,
    executable: String,
    resources: BTreeMap<&'static str, Box<dyn ErasedResource>>,
}

impl Provider {
    /// A provider with no resource types yet. `executable` is the binary's
    /// file name (as installed in a package's `bin/`).
    pub fn new(name: &str, description: &str, version: &str, executable: &str) -> Provider {
        Provider {
            name: name.to_string(),
            description: description.trim().to_string(),
            version: version.to_string(),
            executable: executable.to_string(),
            resources: BTreeMap::new(),
        }
    }

    /// Adds a resource type.
    ///
    /// # Panics
    /// If a resource type of the same name was added already (a programming
    /// error, caught by any test that builds the provider).
    pub fn resource<R: Resource>(mut self, resource: R) -> Provider {
        let previous = self.resources.insert(R::TYPE, Box::new(Typed(resource)));
        assert!(
            previous.is_none(),
            "resource type `{}` added twice",
            R::TYPE
        );
        self
    }

    /// The provider's self-description, as `--schema` prints it.
    pub fn schema(&self) -> ProviderSchema {
        ProviderSchema {
            name: self.name.clone(),
            description: self.description.clone(),
            executable: self.executable.clone(),
            version: self.version.clone(),
            resource_types: self
                .resources
                .iter()
                .map(|(name, resource)| (name.to_string(), resource.schema()))
                .collect(),
        }
    }

    /// Runs the executable: `--schema`, `--version`, `--help`, or (with no
    /// arguments) the protocol on stdin/stdout until EOF.
    pub fn run(self) -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => self.serve_stdio(),
            ["--schema"] => {
                let schema =
                    serde_json::to_string_pretty(&self.schema()).expect("schemas always serialize");
                print_and_exit(&schema)
            }
            ["--version"] => print_and_exit(&format!("{} {}", self.executable, self.version)),
            ["--help"] | ["-h"] => print_and_exit(&self.help()),
            _ => {
                eprintln!("error: unexpected arguments {args:?}\n\n{}", self.help());
                ExitCode::from(2)
            }
        }
    }

    fn help(&self) -> String {
        let types: Vec<&str> = self.resources.keys().copied().collect();
        format!(
            "{exe} {version}: NixOps4 resource provider `{name}`\n{description}\n\n\
             Resource types: {types}\n\n\
             Usage:\n  {exe}             speak the NixOps4 resource protocol on stdin/stdout\n  \
             {exe} --schema    print the resource types' JSON self-description\n  \
             {exe} --version   print the version\n\n\
             Logs go to stderr; set FEDI_LOG (e.g. FEDI_LOG=debug) to choose the level.",
            exe = self.executable,
            version = self.version,
            name = self.name,
            description = self.description,
            types = types.join(", "),
        )
    }

    /// Serves requests on stdin/stdout until EOF.
    fn serve_stdio(self) -> ExitCode {
        // Take the real stdout for the protocol before anything else runs, and
        // point fd 1 at stderr, so that a stray print (ours or a
        // dependency's) lands in the log instead of corrupting the channel.
        let protocol_out = match take_stdout() {
            Ok(file) => file,
            Err(e) => {
                eprintln!("error: cannot set up the protocol channel on stdout: {e}");
                return ExitCode::FAILURE;
            }
        };
        crate::logging::init();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!("cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        match self.serve(&runtime, std::io::stdin().lock(), protocol_out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("protocol channel failed: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Answers each request line from `input` with one response line on
    /// `output`, until EOF. A panic in an operation becomes an
    /// `errorResponse` (and the panic message goes to the log).
    pub fn serve<R, W>(&self, runtime: &Runtime, mut input: R, mut output: W) -> std::io::Result<()>
    where
        R: BufRead,
        W: Write,
    {
        let mut line = Vec::new();
        loop {
            let response = match read_line_limited(&mut input, &mut line, MAX_LINE_BYTES)? {
                LineRead::Eof => return Ok(()),
                LineRead::Blank => continue,
                LineRead::TooLong(bytes) => Response::error(format!(
                    "the request line is too long ({bytes} bytes; the limit is \
                     {MAX_LINE_BYTES} bytes); send one JSON object per line"
                )),
                LineRead::Line => std::panic::catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(self.respond(&line))
                }))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_string());
                    Response::error(format!(
                        "internal error: the provider panicked ({what}); this is a bug in \
                                 the provider, please report it with the log above"
                    ))
                }),
            };
            output.write_all(response.to_line().as_bytes())?;
            output.write_all(b"\n")?;
            output.flush()?;
        }
    }

    /// The response to one request line.
    pub async fn respond(&self, line: &[u8]) -> Response {
        let request = match Request::parse_line(line) {
            Ok(request) => request,
            Err(message) => {
                tracing::warn!("bad request line: {message}");
                return Response::error(message);
            }
        };
        let kind = request.kind();
        let resource_type = request.resource_type().to_string();
        let Some(resource) = self.resources.get(resource_type.as_str()) else {
            let supported: Vec<&str> = self.resources.keys().copied().collect();
            return Response::error(format!(
                "unknown resource type `{resource_type}`: provider `{}` supports {}",
                self.name,
                supported
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let span = tracing::info_span!("request", kind, resource_type = %resource_type);
        let _guard = span.enter();
        tracing::debug!("handling request");
        resource.handle(request).await
    }
}

/// What [`read_line_limited`] found.
enum LineRead {
    /// A line is in the buffer (without its newline).
    Line,
    /// An empty or all-whitespace line, ignored.
    Blank,
    /// The line exceeded the limit and was skipped up to its newline.
    TooLong(usize),
    /// End of input.
    Eof,
}

/// Reads one line into `buffer`, refusing to hold more than `limit` bytes:
/// an overlong line is consumed and dropped, not buffered.
fn read_line_limited<R: BufRead>(
    input: &mut R,
    buffer: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<LineRead> {
    buffer.clear();
    let mut total = 0usize;
    let mut saw_any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if !saw_any {
                return Ok(LineRead::Eof);
            }
            break;
        }
        saw_any = true;
        let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        total += chunk.len();
        if total <= limit {
            buffer.extend_from_slice(chunk);
        }
        let consumed = chunk.len() + usize::from(found_newline);
        input.consume(consumed);
        if found_newline {
            break;
        }
    }
    if total > limit {
        buffer.clear();
        return Ok(LineRead::TooLong(total));
    }
    if buffer.iter().all(u8::is_ascii_whitespace) {
        return Ok(LineRead::Blank);
    }
    Ok(LineRead::Line)
}

/// Duplicates fd 1 for the protocol and points fd 1 at stderr.
fn take_stdout() -> std::io::Result<File> {
    let stdout = std::io::stdout();
    let _lock = stdout.lock();
    let protocol = rustix::io::fcntl_dupfd_cloexec(&stdout, 3)?;
    rustix::stdio::dup2_stdout(std::io::stderr())?;
    Ok(File::from(protocol))
}

fn print_and_exit(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
