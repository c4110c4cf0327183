//! `skiff exec IMAGE`: run one container here and now, like `docker run`.
//!
//! A command guest runs to completion: its stdout and stderr pass through
//! and skiff exits with its exit code. Any other outcome prints one line
//! saying what happened and which limit was hit, and exits with:
//! 124 timeout, 125 load error, 134 trap, 137 memory limit, 152 out of fuel.
//! An HTTP guest is served on `--listen` until Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use skiff_runtime::{
    Budget, Guest, HttpHandler, Limits, LogSink, LogStream, Mount, Outcome, Report, RunLimits,
    Runtime, RuntimeConfig, Sandbox,
};

use crate::units::parse_duration;

/// Run one container here and now.
#[derive(clap::Args)]
#[command(trailing_var_arg = true)]
pub struct Exec {
    /// The image: a .wasm file (a WASI command module or component, or a
    /// wasi:http component), WAT text, or an OCI reference
    /// (REGISTRY/REPOSITORY:TAG or @sha256:DIGEST) to pull.
    pub image: PathBuf,
    /// CPU units, 1024 = one core. Below 1024 the guest is throttled to that
    /// share of a core. Default: no quota.
    #[arg(long, value_name = "UNITS", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpu: Option<u32>,
    /// Memory limit in MiB (all linear memory of the container). Default 1024.
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub memory: u64,
    /// Wall-clock timeout per run (per request for HTTP): 500ms, 2s, 1m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Fuel budget per run (per request for HTTP), in fuel units (about one
    /// per wasm instruction).
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// An environment variable for the guest (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Mount a host directory: HOST[:GUEST][:ro|:rw], read-only unless :rw.
    /// GUEST defaults to HOST (repeatable).
    #[arg(long = "dir", value_name = "HOST[:GUEST][:rw]", value_parser = parse_mount)]
    pub dirs: Vec<Mount>,
    /// A host the guest may send HTTP requests to: [SCHEME://]HOST[:PORT],
    /// *.DOMAIN or * (repeatable). None by default.
    #[arg(long = "allow-outbound", value_name = "HOST", value_parser = crate::model::outbound::OutboundRule::parse)]
    pub allow_outbound: Vec<crate::model::outbound::OutboundRule>,
    /// Print, as the last line of stdout, one JSON object with the outcome.
    #[arg(long)]
    pub json: bool,
    /// Where an HTTP guest is served.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Let one instance of an HTTP guest serve up to N requests, one after
    /// another (as `skiff.instance-reuse`); default 1, a fresh instance for
    /// every request.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=crate::model::taskdef::MAX_INSTANCE_REUSE as i64))]
    pub instance_reuse: u32,
    /// Directory for compiled code. Default: $SKIFF_CACHE_DIR, else
    /// $XDG_CACHE_HOME/skiff, else ~/.cache/skiff.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time; keep nothing on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    #[command(flatten)]
    pub registry: super::push::RegistryArgs,
    /// Arguments for the guest (after `--`).
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not K=V: write --env NAME=value")),
    }
}

fn parse_mount(s: &str) -> Result<Mount, String> {
    let (rest, writable) = if let Some(r) = s.strip_suffix(":rw") {
        (r, true)
    } else if let Some(r) = s.strip_suffix(":ro") {
        (r, false)
    } else {
        (s, false)
    };
    let (host, guest) = match rest.split_once(':') {
        Some((h, g)) => (h, g),
        None => (rest, rest),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!(
            "`{s}` is not HOST[:GUEST][:ro|:rw]: write --dir ./data:/data"
        ));
    }
    let host = PathBuf::from(host);
    if !host.is_dir() {
        return Err(format!(
            "`{}` is not a directory on this host",
            host.display()
        ));
    }
    Ok(Mount {
        host,
        guest: guest.to_string(),
        writable,
    })
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SKIFF_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("skiff"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("skiff"))
}

/// Passes guest output through to this process's stdout and stderr.
struct PassThrough;

impl LogSink for PassThrough {
    fn line(&self, stream: LogStream, _at: SystemTime, line: &str) {
        // A closed pipe is the reader's choice; the guest goes on.
        let _ = match stream {
            LogStream::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            LogStream::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
        };
    }
}

/// The exit code skiff uses for an outcome. A guest's own code passes
/// through when it fits a process status (0-255); any other code is 255,
/// so that a failure never turns into success by truncation (256 & 0xff).
pub fn exit_code(outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Exit(c) if (0..=255).contains(c) => *c,
        Outcome::Exit(_) => 255,
        Outcome::Timeout { .. } => 124,
        Outcome::LoadError(_) => 125,
        Outcome::Trap { .. } => 134,
        Outcome::MemoryLimit { .. } => 137,
        Outcome::OutOfFuel { .. } => 152,
    }
}

/// The `--json` line.
pub fn report_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "outcome": r.outcome.name(),
        "exit_code": r.outcome.exit_code(),
        "reason": r.outcome.reason(),
        "fuel_consumed": r.fuel_consumed,
        "peak_memory_bytes": r.peak_memory_bytes,
        "wall_ms": r.wall.as_millis() as u64,
    })
}

impl Exec {
    /// Runs the container; returns the process exit code.
    pub fn execute(self) -> i32 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let rt = match rt {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("skiff: cannot start the async runtime: {e}");
                return 1;
            }
        };
        rt.block_on(self.run())
    }

    async fn run(self) -> i32 {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        let runtime = match Runtime::new(RuntimeConfig {
            cache_dir,
            ..RuntimeConfig::default()
        }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skiff: cannot start the wasm engine: {e:#}");
                return 1;
            }
        };
        let guest = match self.load(&runtime).await {
            Ok(g) => g,
            Err(code) => return code,
        };
        let sandbox = self.sandbox();
        let budget = Budget::new(Limits {
            memory_bytes: self.memory << 20,
            cpu_units: self.cpu,
        });
        let limits = RunLimits {
            fuel: self.fuel,
            timeout: self.timeout,
        };

        if guest.kind().is_command() {
            let report = runtime.run(&guest, &budget, &sandbox, limits).await;
            return self.finish(&report);
        }
        match HttpHandler::new(&runtime, &guest, budget, sandbox, limits) {
            Ok(handler) => {
                let handler = handler.reuse_instances(self.instance_reuse);
                serve(handler, self.listen, &self.image).await
            }
            Err(e) => self.finish(&load_failed(&self.image, e)),
        }
    }

    /// A registry image's bytes, pulled into the cache next to the
    /// compiled code; `None` for a file. Errs with the exit code.
    async fn pull(&self) -> Result<Option<Vec<u8>>, i32> {
        use crate::model::image::ImageSource;
        match self.image.to_str().map(ImageSource::parse) {
            Some(Err(e)) => {
                eprintln!("skiff: {e}");
                Err(125)
            }
            Some(Ok(ImageSource::Oci(reference))) => {
                let dir = self
                    .cache_dir
                    .clone()
                    .or_else(default_cache_dir)
                    .filter(|_| !self.no_cache)
                    .unwrap_or_else(|| std::env::temp_dir().join("skiff-exec"));
                let registry = self.registry.registry(dir.join("images"), None);
                match registry.pull(&reference, None, None).await {
                    Ok(p) => Ok(Some(p.bytes)),
                    Err(e) => {
                        eprintln!("skiff: CannotPullContainerError: {e}");
                        Err(125)
                    }
                }
            }
            _ => Ok(None),
        }
    }

    /// The image, pulled if it is a registry's, and compiled (or read from
    /// the cache). Errs with the exit code, having said why.
    async fn load(&self, runtime: &Runtime) -> Result<Guest, i32> {
        let pulled = self.pull().await?;
        let path = self.image.clone();
        let loader = runtime.clone();
        let mut loading = tokio::task::spawn_blocking(move || match pulled {
            Some(bytes) => loader.load(&bytes),
            None => loader.load_file(&path),
        });
        // Compiling a large module takes a while the first time: say so on a
        // terminal after half a second; stay quiet when piped.
        let loaded = tokio::select! {
            r = &mut loading => r,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                use std::io::IsTerminal;
                let terminal = std::io::stderr().is_terminal();
                if terminal {
                    eprint!("skiff: compiling {} (once; the result is cached)...", self.image.display());
                }
                let r = loading.await;
                if terminal {
                    eprintln!(" done");
                }
                r
            }
        };
        match loaded {
            Ok(Ok(g)) => Ok(g),
            Ok(Err(e)) => Err(self.finish(&load_failed(&self.image, e))),
            Err(e) => {
                eprintln!("skiff: loading {} failed: {e}", self.image.display());
                Err(125)
            }
        }
    }

    /// What the guest sees: its arguments (the image's name first), its
    /// environment, directories and outbound rules; logs go to this
    /// process's own stdout and stderr.
    fn sandbox(&self) -> Sandbox {
        let program = self
            .image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "guest".into());
        let mut args = vec![program];
        args.extend(self.args.iter().cloned());
        Sandbox {
            args,
            env: self.env.clone(),
            mounts: self.dirs.clone(),
            logs: Arc::new(PassThrough),
            outbound: crate::agent::outbound_policy(&self.allow_outbound.iter().cloned().collect()),
            local: None,
            links: None,
        }
    }

    fn finish(&self, report: &Report) -> i32 {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", report_json(report));
            let _ = out.flush();
        } else if !matches!(report.outcome, Outcome::Exit(_)) {
            eprintln!(
                "skiff: {}: {}",
                self.image.display(),
                report.outcome.reason()
            );
            if let Outcome::Trap { backtrace, .. } = &report.outcome {
                if !backtrace.is_empty() {
                    eprintln!("{backtrace}");
                }
            }
        }
        exit_code(&report.outcome)
    }
}

/// The report of an image that could not be loaded, naming the image.
fn load_failed(image: &std::path::Path, e: skiff_runtime::LoadError) -> Report {
    let e = match e {
        skiff_runtime::LoadError::Invalid(m) => {
            skiff_runtime::LoadError::Invalid(format!("{}: {m}", image.display()))
        }
        other => other,
    };
    Report::bare(Outcome::LoadError(e))
}

/// Serves an HTTP guest until Ctrl-C.
async fn serve(handler: HttpHandler, addr: SocketAddr, image: &std::path::Path) -> i32 {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "skiff: cannot listen on {addr}: {e}; pass --listen with a free address (127.0.0.1:0 picks one)"
            );
            return 1;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!(
        "skiff: serving {} on http://{local}/ (Ctrl-C to stop)",
        image.display()
    );
    let handler = handler.on_report(|r| {
        if !r.outcome.is_success() {
            eprintln!("skiff: request failed: {}", r.outcome.reason());
        }
    });
    crate::ingress::serve(listener, handler, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    0
}
