//! The sandbox a guest sees: argv, environment, preopened directories,
//! stdio (stdin empty, stdout and stderr captured line by line into a log
//! sink), and the hosts it may send HTTP requests to. Everything not
//! granted here is denied: no other host files (cap-std resolves every
//! path, `..` and symlink inside its directory), no sockets, no outbound
//! HTTP but to the allowed hosts.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::limits::StoreLimiter;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// Receives a guest's output, one line at a time (without the newline).
/// Lines longer than [`MAX_LINE`] bytes arrive in pieces of that size.
pub trait LogSink: Send + Sync {
    /// One line of output, stamped with the time it was completed.
    fn line(&self, stream: LogStream, at: SystemTime, line: &str);
}

/// The longest line handed to a [`LogSink`] in one piece.
pub const MAX_LINE: usize = 16 * 1024;

/// A sink that drops everything (the default).
pub struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, _: LogStream, _: SystemTime, _: &str) {}
}

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (for example `/data`).
    pub guest: String,
    /// Whether the guest may create, write and delete in it. Default: no.
    pub writable: bool,
}

/// What a guest may see. The default is the least: argv of just the
/// program name `guest`, an empty environment, no directories, output
/// discarded.
#[derive(Clone)]
pub struct Sandbox {
    /// argv, program name first.
    pub args: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Preopened directories.
    pub mounts: Vec<Mount>,
    /// Where stdout and stderr go.
    pub logs: Arc<dyn LogSink>,
    /// Where `wasi:http/outgoing-handler` may send requests; none when
    /// empty.
    pub outbound: Arc<[OutboundRule]>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            args: vec!["guest".to_string()],
            env: Vec::new(),
            mounts: Vec::new(),
            logs: Arc::new(DiscardLogs),
            outbound: Arc::new([]),
        }
    }
}

/// One host a guest may send HTTP requests to: `[SCHEME://]HOST[:PORT]`,
/// where HOST is a name, an IP address, `*.DOMAIN` (any name under
/// DOMAIN) or `*` (any host). Without a port, only the scheme's default
/// port (80, 443) is allowed; without a scheme, both http and https.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

impl OutboundRule {
    /// Reads one rule; the error says what a rule looks like.
    pub fn parse(rule: &str) -> Result<OutboundRule, String> {
        let bad = |why: &str| {
            format!(
                "{rule:?} {why}; expected [http://|https://]HOST[:PORT], such as \
                 api.example.com, https://*.example.com or http://127.0.0.1:8080"
            )
        };
        let (scheme, rest) = match rule.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (Some(s.to_string()), rest),
            Some(_) => return Err(bad("has a scheme other than http or https")),
            None => (None, rule),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.is_empty() {
            return Err(bad("is not a host"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("has a port that is not a number from 1 to 65535"))?;
                (h, Some(port))
            }
            _ => (rest, None),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.contains(':') && !rest.starts_with('[') {
            return Err(bad("has an IPv6 address without brackets"));
        }
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = host == "*"
            || (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':')));
        if !valid {
            return Err(bad("has an invalid host"));
        }
        Ok(OutboundRule { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        if self.port.unwrap_or(default_port) != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            // A name under the domain; never an IP address.
            Some(domain) => {
                host.parse::<std::net::IpAddr>().is_err()
                    && host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
            None => host == self.host,
        }
    }
}

impl Sandbox {
    /// Builds the WASI context for one instance. Fails only when a mount's
    /// host directory cannot be opened, naming it.
    fn builder(&self) -> wasmtime::Result<WasiCtxBuilder> {
        let mut b = WasiCtxBuilder::new();
        b.args(&self.args)
            .envs(&self.env)
            .stdin(tokio::io::empty())
            .stdout(LogOutput {
                sink: self.logs.clone(),
                stream: LogStream::Stdout,
            })
            .stderr(LogOutput {
                sink: self.logs.clone(),
                stream: LogStream::Stderr,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for m in &self.mounts {
            let perms = if m.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(&m.host, &m.guest, perms).map_err(|e| {
                e.context(format!(
                    "cannot open directory {} to mount at {}",
                    m.host.display(),
                    m.guest
                ))
            })?;
        }
        Ok(b)
    }

    pub(crate) fn p1_host(&self, limiter: StoreLimiter) -> wasmtime::Result<P1Host> {
        Ok(P1Host {
            wasi: self.builder()?.build_p1(),
            limiter,
        })
    }

    pub(crate) fn p2_host(&self, limiter: StoreLimiter) -> wasmtime::Result<P2Host> {
        Ok(P2Host {
            wasi: self.builder()?.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: Outbound {
                rules: self.outbound.clone(),
            },
            limiter,
        })
    }
}

/// Store data of a preview-1 guest.
pub(crate) struct P1Host {
    pub wasi: WasiP1Ctx,
    pub limiter: StoreLimiter,
}

/// Store data of a preview-2 guest (command or HTTP).
pub(crate) struct P2Host {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    pub hooks: Outbound,
    pub limiter: StoreLimiter,
}

impl WasiView for P2Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for P2Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outbound HTTP: a request to a host no rule allows is answered
/// `HTTP-request-denied` without any connection being made; an allowed
/// one is sent.
pub(crate) struct Outbound {
    rules: Arc<[OutboundRule]>,
}

type SendResult = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn std::future::Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let scheme = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            "https"
        } else {
            "http"
        };
        let allowed = uri.authority().is_some_and(|a| {
            let port = a
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            self.rules.iter().any(|r| r.allows(scheme, host, port))
        });
        if !allowed {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                resp.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

/// stdout or stderr of a guest, split into lines for a [`LogSink`].
struct LogOutput {
    sink: Arc<dyn LogSink>,
    stream: LogStream,
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            sink: self.sink.clone(),
            stream: self.stream,
            buf: Vec::new(),
        })
    }
}

struct LineWriter {
    sink: Arc<dyn LogSink>,
    stream: LogStream,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        self.sink.line(self.stream, SystemTime::now(), line);
    }

    fn push(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.buf.is_empty() {
                self.emit(&data[..nl]);
            } else {
                self.buf.extend_from_slice(&data[..nl]);
                let line = std::mem::take(&mut self.buf);
                self.emit(&line);
            }
            data = &data[nl + 1..];
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= MAX_LINE {
            let rest = self.buf.split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.buf, rest);
            self.emit(&piece);
        }
    }

    fn finish(&mut self) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().push(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);
    impl LogSink for Collect {
        fn line(&self, _: LogStream, _: SystemTime, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    #[test]
    fn splits_lines_and_flushes_the_rest_on_drop() {
        let sink = Arc::new(Collect::default());
        let mut w = LineWriter {
            sink: sink.clone(),
            stream: LogStream::Stdout,
            buf: Vec::new(),
        };
        w.push(b"one\ntw");
        w.push(b"o\r\nthree");
        drop(w);
        assert_eq!(*sink.0.lock().unwrap(), vec!["one", "two", "three"]);
    }

    #[test]
    fn outbound_rules_allow_only_what_they_name() {
        let r = |s: &str| OutboundRule::parse(s).unwrap();
        assert!(r("api.example.com").allows("https", "API.example.com", 443));
        assert!(r("api.example.com").allows("http", "api.example.com", 80));
        assert!(!r("api.example.com").allows("http", "api.example.com", 8080));
        assert!(!r("api.example.com").allows("http", "evil.com", 80));
        assert!(!r("api.example.com").allows("http", "api.example.com.evil.com", 80));
        assert!(r("https://*.example.com").allows("https", "a.b.example.com", 443));
        assert!(!r("https://*.example.com").allows("https", "example.com", 443));
        assert!(!r("https://*.example.com").allows("https", "badexample.com", 443));
        assert!(!r("https://*.example.com").allows("http", "a.example.com", 80));
        assert!(r("http://127.0.0.1:8080").allows("http", "127.0.0.1", 8080));
        assert!(!r("http://127.0.0.1:8080").allows("http", "127.0.0.1", 8081));
        assert!(r("*:9000").allows("http", "anything", 9000));
        for bad in [
            "ftp://x",
            "http://a/b",
            "user@host",
            "host:0",
            "host:99999",
            "",
            "a b",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_lines_come_in_pieces() {
        let sink = Arc::new(Collect::default());
        let mut w = LineWriter {
            sink: sink.clone(),
            stream: LogStream::Stdout,
            buf: Vec::new(),
        };
        w.push(&vec![b'x'; MAX_LINE * 2 + 5]);
        drop(w);
        let lines = sink.0.lock().unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].len(), 5);
    }
}
