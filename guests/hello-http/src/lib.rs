//! `hello-http`: a wasi:http/incoming-handler component.
//!
//! `GET /` answers `hello from skiff` followed by ` (GREETING)` when the
//! GREETING environment variable is set, so tests can see env pass through.
//! `GET /healthz` answers `ok`, or `503 unhealthy` when the HEALTH_FILE
//! environment variable names a file that does not exist (so a test can
//! turn a task unhealthy through a mounted volume). `GET /status/N`
//! answers with status N. `GET /counter` answers how many times this
//! instance has been asked it (1 in a fresh instance; more where instances
//! are reused). `GET /spin?n=N` burns N loop iterations before
//! answering, for CPU-limit tests. For the ingress tests: `/trap` traps,
//! `/alloc?mib=N` allocates N MiB, `/sleep?ms=N` sleeps, `/env/NAME`
//! answers an environment variable, `/stream?kib=N` streams N KiB, and
//! `/count` reads the request body and answers its length.
//! `/fetch?url=http://HOST:PORT/PATH` makes an outbound request with the
//! request's method (and, for PUT and POST, its body) and answers
//! `fetched STATUS: BODY`, or 502 `fetch failed: ERROR` (for the outbound
//! allow-list and the task's own endpoints). Any other path is echoed
//! back.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

/// Requests this instance has answered on `/counter`.
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn spin(n: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    x
}

/// Reads the whole request body, chunk by chunk, handing each to `each`;
/// returns why it failed, if it did.
fn read_body(request: IncomingRequest, mut each: impl FnMut(&[u8])) -> Result<(), String> {
    let body = request.consume().map_err(|_| "no body".to_string())?;
    let stream = body.stream().map_err(|_| "no body stream".to_string())?;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => each(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(e.to_debug_string())
            }
        }
    }
    Ok(())
}

/// Reads the whole request body; returns its length or why it failed.
fn count_body(request: IncomingRequest) -> Result<u64, String> {
    let mut n = 0u64;
    read_body(request, |chunk| n += chunk.len() as u64)?;
    Ok(n)
}

/// Sends `method` to `url` through wasi:http/outgoing-handler, with
/// `body` when there is one.
fn fetch(
    method: &wasip2::http::types::Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, String), String> {
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(format!("{url} is not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_method(method);
    let _ = req.set_scheme(Some(&scheme));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(path));
    let out = req.body().map_err(|_| "no request body".to_string())?;
    let pending =
        wasip2::http::outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    {
        let stream = out
            .write()
            .map_err(|_| "no request body stream".to_string())?;
        for piece in body.unwrap_or_default().chunks(4096) {
            stream
                .blocking_write_and_flush(piece)
                .map_err(|e| format!("writing the request body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(out, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let resp = match pending.get() {
        Some(Ok(Ok(resp))) => resp,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ => return Err("no response".to_string()),
    };
    let status = resp.status();
    let body = resp.consume().map_err(|_| "no body".to_string())?;
    let stream = body.stream().map_err(|_| "no body stream".to_string())?;
    let mut text = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => text.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(e.to_debug_string())
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

fn query_num(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let mut status: u16 = 200;
        let mut stream_kib = 0;
        let body = if path == "/" {
            match std::env::var("GREETING") {
                Ok(g) => format!("hello from skiff ({g})\n"),
                Err(_) => "hello from skiff\n".to_string(),
            }
        } else if path == "/healthz" {
            match std::env::var("HEALTH_FILE") {
                Ok(f) if std::fs::metadata(&f).is_err() => {
                    status = 503;
                    "unhealthy\n".to_string()
                }
                _ => "ok\n".to_string(),
            }
        } else if let Some(code) = path.strip_prefix("/status/") {
            status = code.parse().unwrap_or(500);
            format!("status {status}\n")
        } else if let Some(n) = query_num(&path, "/spin?n=") {
            format!("spun {}\n", spin(n))
        } else if path == "/trap" {
            core::arch::wasm32::unreachable()
        } else if path == "/counter" {
            // 1 in a fresh instance; counts up in a reused one.
            let n = REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            format!("request {n} of this instance\n")
        } else if let Some(mib) = query_num(&path, "/alloc?mib=") {
            let v = vec![1u8; (mib as usize) << 20];
            format!("allocated {} MiB\n", std::hint::black_box(v).len() >> 20)
        } else if let Some(ms) = query_num(&path, "/sleep?ms=") {
            println!("sleeping {ms} ms");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            format!("slept {ms} ms\n")
        } else if let Some(name) = path.strip_prefix("/env/") {
            match std::env::var(name) {
                Ok(v) => format!("{v}\n"),
                Err(_) => {
                    status = 404;
                    format!("{name} is not set\n")
                }
            }
        } else if let Some(kib) = query_num(&path, "/stream?kib=") {
            stream_kib = kib;
            String::new()
        } else if let Some(url) = path.strip_prefix("/fetch?url=") {
            use wasip2::http::types::Method;
            let method = request.method();
            let body = match method {
                Method::Put | Method::Post => {
                    let mut bytes = Vec::new();
                    match read_body(request, |chunk| bytes.extend_from_slice(chunk)) {
                        Ok(()) => Ok(Some(bytes)),
                        Err(e) => Err(e),
                    }
                }
                _ => Ok(None),
            };
            match body.and_then(|body| fetch(&method, url, body)) {
                Ok((code, text)) => format!("fetched {code}: {text}"),
                Err(e) => {
                    status = 502;
                    format!("fetch failed: {e}\n")
                }
            }
        } else if path == "/count" {
            match count_body(request) {
                Ok(n) => format!("read {n} bytes\n"),
                Err(e) => {
                    status = 413;
                    format!("body error: {e}\n")
                }
            }
        } else {
            format!("you asked for {path}\n")
        };

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let resp = OutgoingResponse::new(headers);
        let _ = resp.set_status_code(status);
        let out_body = resp.body().expect("response body");
        ResponseOutparam::set(response_out, Ok(resp));
        let mut out = out_body.write().expect("body stream");
        out.write_all(body.as_bytes()).expect("write body");
        // A streamed body: one KiB at a time, never held whole.
        let mut line = [b'x'; 1024];
        line[1023] = b'\n';
        for _ in 0..stream_kib {
            out.write_all(&line).expect("write body");
        }
        out.flush().expect("flush body");
        drop(out);
        OutgoingBody::finish(out_body, None).expect("finish body");
    }
}
