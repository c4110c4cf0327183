//! The sandbox a guest sees: argv, environment, preopened directories,
//! stdio (stdin empty, stdout and stderr captured line by line into a log
//! sink), the hosts it may send HTTP requests to, and the endpoints the
//! host answers itself ([`LocalEndpoint`]). Everything not granted
//! here is denied: no other host files (cap-std resolves every path, `..`
//! and symlink inside its directory), no sockets, no outbound HTTP but to
//! the allowed hosts.

use std::future::Future;
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
    /// Where `wasi:http/outgoing-handler` may send requests; nowhere by
    /// default ([`DenyAll`]).
    pub outbound: Arc<dyn OutboundPolicy>,
    /// What answers the guest's plain-HTTP requests to its
    /// [`LocalEndpoint::host`] (port 80), in process and whatever
    /// `outbound` says; none by default (every address is then an outbound
    /// host like any other).
    pub local: Option<Arc<dyn LocalEndpoint>>,
    /// Other services the guest reaches by name over plain HTTP (ECS's
    /// Service Connect), in process and whatever `outbound` says; none by
    /// default.
    pub links: Option<Arc<dyn ServiceLinks>>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            args: vec!["guest".to_string()],
            env: Vec::new(),
            mounts: Vec::new(),
            logs: Arc::new(DiscardLogs),
            outbound: Arc::new(DenyAll),
            local: None,
            links: None,
        }
    }
}

/// The largest request body a [`LocalEndpoint`] is handed; a larger one
/// is answered 413 without it being called.
pub const MAX_LOCAL_BODY: usize = 64 * 1024;

/// A guest's request to a [`LocalEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRequest {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The whole body (at most [`MAX_LOCAL_BODY`] bytes).
    pub body: bytes::Bytes,
}

/// The answer to a [`LocalRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The HTTP status.
    pub status: u16,
    /// Its `content-type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Answers a guest's plain-HTTP requests to one host (port 80) without
/// any connection being made: an engine's own endpoints for its guests
/// (skiff's: Fargate's task metadata and scale-in protection endpoints at
/// its link-local address). Runs on the guest's worker: anything that
/// blocks belongs on a blocking thread.
pub trait LocalEndpoint: Send + Sync {
    /// The host (a name or an IP address, as the guest writes it in its
    /// URL) whose requests this answers.
    fn host(&self) -> &str;

    /// The answer to `req`.
    fn answer(&self, req: LocalRequest) -> Pin<Box<dyn Future<Output = LocalResponse> + Send>>;
}

/// The answer to a request a [`ServiceLinks`] sends.
pub type LinkResult =
    Result<http::Response<wasmtime_wasi_http::WasiBody>, wasmtime_wasi_http::Error>;

/// Other services a guest calls by name (`http://NAME:PORT/`), answered
/// in process by the host instead of through a connection. Asked before
/// the outbound policy: a linked name needs no outbound rule.
pub trait ServiceLinks: Send + Sync {
    /// Whether `http://host:port` names a linked service (`host` is
    /// lowercase, without brackets; `port` is explicit or 80).
    fn links(&self, host: &str, port: u16) -> bool;
    /// Sends `request`, whose authority [`ServiceLinks::links`] accepted,
    /// and its answer, whose body streams.
    fn send(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Pin<Box<dyn Future<Output = LinkResult> + Send>>;
}

/// Decides which outbound HTTP requests (`wasi:http/outgoing-handler`) a
/// guest may send, before any connection is made. The default policy,
/// [`DenyAll`], lets nothing out. Any `Fn(scheme, host, port) -> bool` is
/// a policy.
pub trait OutboundPolicy: Send + Sync {
    /// Whether a request to `scheme://host:port` may be sent (`scheme` is
    /// `http` or `https`; `host` has no brackets; `port` is explicit or
    /// the scheme's default).
    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool;
}

impl<F: Fn(&str, &str, u16) -> bool + Send + Sync> OutboundPolicy for F {
    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self(scheme, host, port)
    }
}

/// The policy that lets no request out.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl OutboundPolicy for DenyAll {
    fn allows(&self, _: &str, _: &str, _: u16) -> bool {
        false
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
                policy: self.outbound.clone(),
                local: self.local.clone(),
                links: self.links.clone(),
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
    policy: Arc<dyn OutboundPolicy>,
    local: Option<Arc<dyn LocalEndpoint>>,
    links: Option<Arc<dyn ServiceLinks>>,
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
        if let Some(local) = self.local.clone().filter(|local| {
            scheme == "http"
                && uri.host() == Some(local.host())
                && uri.port_u16().unwrap_or(80) == 80
        }) {
            return Box::new(answer_locally(local, request));
        }
        if let Some(links) = self.links.clone().filter(|l| {
            scheme == "http"
                && uri.authority().is_some_and(|a| {
                    let host = a.host().trim_start_matches('[').trim_end_matches(']');
                    l.links(&host.to_ascii_lowercase(), a.port_u16().unwrap_or(80))
                })
        }) {
            return Box::new(async move {
                let resp = links.send(request).await?;
                Ok((
                    resp,
                    Box::new(async { Ok(()) }) as Box<dyn std::future::Future<Output = _> + Send>,
                ))
            });
        }
        let allowed = uri.authority().is_some_and(|a| {
            let port = a
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            self.policy.allows(scheme, host, port)
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

/// A request to a local endpoint's host, answered by `local`.
async fn answer_locally(
    local: Arc<dyn LocalEndpoint>,
    request: http::Request<wasmtime_wasi_http::WasiBody>,
) -> SendResult {
    use http_body_util::{BodyExt, Full, Limited};
    let (parts, body) = request.into_parts();
    let answer = match Limited::new(body, MAX_LOCAL_BODY).collect().await {
        Ok(body) => {
            local
                .answer(LocalRequest {
                    method: parts.method.as_str().to_string(),
                    path: parts.uri.path().to_string(),
                    body: body.to_bytes(),
                })
                .await
        }
        Err(_) => LocalResponse {
            status: 413,
            content_type: "text/plain; charset=utf-8",
            body: format!("the request body is over {MAX_LOCAL_BODY} bytes\n"),
        },
    };
    let resp = http::Response::builder()
        .status(answer.status)
        .header(http::header::CONTENT_TYPE, answer.content_type)
        .body(
            Full::new(bytes::Bytes::from(answer.body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))?;
    Ok((
        resp,
        Box::new(async { Ok(()) }) as Box<dyn std::future::Future<Output = _> + Send>,
    ))
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
