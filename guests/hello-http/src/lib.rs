//! `hello-http`: a wasi:http/incoming-handler component.
//!
//! `GET /` answers `hello from skiff` followed by ` (GREETING)` when the
//! GREETING environment variable is set, so tests can see env pass through.
//! `GET /healthz` answers `ok`, or `503 unhealthy` when the HEALTH_FILE
//! environment variable names a file that does not exist (so a test can
//! turn a task unhealthy through a mounted volume). `GET /status/N`
//! answers with status N. `GET /spin?n=N` burns N loop iterations before
//! answering, for CPU-limit tests. Any other path is echoed back.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

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

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let mut status: u16 = 200;
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
        } else if let Some(n) = path.strip_prefix("/spin?n=") {
            let n: u64 = n.parse().unwrap_or(0);
            format!("spun {}\n", spin(n))
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
        out.flush().expect("flush body");
        drop(out);
        OutgoingBody::finish(out_body, None).expect("finish body");
    }
}
