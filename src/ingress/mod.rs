//! The HTTP front: accepts HTTP/1.1 (keep-alive) and HTTP/2 (h2c)
//! connections and hands each request to a guest's handler. A request
//! that ends without a response is answered here: 504 for a timeout, 500
//! for anything else, with the reason in the body.
//!
//! [`routes`] is the table of services and their tasks and the choice of a
//! task per request; [`front`] runs the accept loops on the worker threads
//! and answers requests (routing, admission, 404/413/503, request ids);
//! [`peers`] forwards a request to another node that runs the service.
//! [`serve`] is the one-handler server of `skiff exec`.

pub mod acme;
pub mod domains;
pub mod front;
pub mod load;
pub mod peers;
pub mod routes;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use skiff_runtime::{full_body, HttpHandler, Outcome, Report, ResponseBody};
use tokio::net::TcpListener;

/// How long open connections get to finish after shutdown is asked for.
const DRAIN: Duration = Duration::from_secs(5);

/// The most connections one ingress accept loop keeps open; past that a
/// new connection is answered 503 and closed, so that idle connections
/// cannot use memory without bound.
pub const MAX_CONNECTIONS: usize = 10_000;

/// The most bytes of request line and headers an HTTP/1.1 request may
/// have (hyper answers 431 past it), and the most header bytes of an
/// HTTP/2 request.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What an accept loop bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// The whole response written to a connection past that limit, before
    /// it is closed.
    pub refusal: bytes::Bytes,
}

impl Default for Limits {
    fn default() -> Self {
        let body = "too many connections are open to this server; retry later\n";
        Limits {
            connections: MAX_CONNECTIONS,
            refusal: bytes::Bytes::from(format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )),
        }
    }
}

/// The peer of the connection a request came on (in its extensions).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// In a request's extensions when it came over TLS.
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// Why one of the ingress's followers (of a store table, of a
/// certificate directory, the ACME manager) could not start.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The store could not be read.
    #[error("cannot read {prefix}: {source}")]
    Read {
        prefix: &'static str,
        source: crate::store::StoreError,
    },
    /// A directory could not be made or read (`doing`: what was done, or
    /// the flag that named it).
    #[error("{doing} {}: {source}", path.display())]
    Dir {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A certificate issued before could not be stored.
    #[error("cannot store the certificate of {name}: {source}")]
    Store {
        name: String,
        source: crate::store::StoreError,
    },
    /// Its thread could not start.
    #[error("cannot start the {what}: {source}")]
    Thread {
        what: String,
        source: std::io::Error,
    },
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Accepts HTTP/1.1 and h2c connections on `listener` (or, with `tls`,
/// HTTPS: HTTP/2 or HTTP/1.1 as ALPN agrees) and answers each request
/// with `answer`, until `shutdown` resolves; then stops accepting and lets
/// open connections finish (up to a few seconds). The caller binds the
/// listener, so a test can bind port 0.
pub async fn accept_loop<A, Fut, B>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    answer: A,
) where
    A: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: back off briefly
                // rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if open.load(std::sync::atomic::Ordering::Relaxed) >= limits.connections {
            refuse(stream, limits.refusal.clone());
            continue;
        }
        let _ = stream.set_nodelay(true);
        // A second handle on a plain socket, to close it gently when hyper
        // is done with it.
        let keep = tls.is_none().then(|| second_handle(&stream)).flatten();
        let answer = answer.clone();
        let secure = tls.is_some();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let answer = answer.clone();
            req.extensions_mut().insert(Peer(peer));
            if secure {
                req.extensions_mut().insert(Secure);
            }
            async move { Ok::<_, std::convert::Infallible>(answer(req).await) }
        });
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let open = open.clone();
        match &tls {
            None => {
                let conn = graceful.watch(
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
                tokio::spawn(async move {
                    // A client that goes away mid-request is not an error
                    // of ours.
                    let _ = conn.await;
                    open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(keep) = keep.and_then(|k| tokio::net::TcpStream::from_std(k).ok()) {
                        linger(keep).await;
                    }
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's own task, so a
                // slow client holds up no one else.
                let handshake = acceptor.accept(stream);
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE, handshake).await {
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(conn).await;
                    }
                    open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Answers a connection past the limit with `refusal`, without waiting
/// for its request (a client that has not sent it yet reads the answer
/// when it does), and closes it gently.
fn refuse(stream: tokio::net::TcpStream, refusal: bytes::Bytes) {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&refusal)).await;
        linger(stream).await;
    });
}

/// Another handle on `stream`'s socket.
fn second_handle(stream: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

/// How long, and how many bytes, a closing connection's unread input is
/// read and dropped for.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Closes a connection gently (a lingering close, as nginx does): sends
/// FIN, then reads and drops what the client still sends until it closes
/// too (bounded in time and bytes). Closing a socket with unread input
/// sends a reset, and a client still sending (a body over the limit,
/// headers over the limit) would see the reset instead of the 413 or 431
/// it was answered.
async fn linger(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// Serves one guest's `handler` for every request (as `skiff exec` does).
pub async fn serve(
    listener: TcpListener,
    handler: HttpHandler,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, shutdown, Limits::default(), None, move |req| {
        let handler = handler.clone();
        async move { answer(&handler, req).await }
    })
    .await;
}

async fn answer(handler: &HttpHandler, req: Request<Incoming>) -> Response<ResponseBody> {
    match handler.handle(req).await {
        Ok(resp) => resp,
        Err(report) => failure_response(&report),
    }
}

/// The response for a request whose guest gave none.
pub fn failure_response(report: &Report) -> Response<ResponseBody> {
    let status = match report.outcome {
        Outcome::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut resp = Response::new(full_body(format!("{}\n", report.outcome.reason())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
