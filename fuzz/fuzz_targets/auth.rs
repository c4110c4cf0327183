//! Authentication and policies: any Authorization header, date and body
//! are verified or refused in AWS's words; any policy document parses or
//! is refused; nothing panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff::auth::sigv4::{self, Request};
use skiff::auth::Policy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (authz, date, path, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let headers = [
        ("host", "127.0.0.1:8800"),
        ("authorization", authz),
        ("x-amz-date", date),
    ];
    let req = Request {
        method: "POST",
        path,
        query,
        headers: &headers,
        body: body.as_bytes(),
    };
    let secret = |id: &str| (id == "AKIAFUZZFUZZFUZZFUZZ").then_some("fuzz-secret");
    let now = sigv4::parse_amz_date(date).unwrap_or(0);
    if let Err(e) = sigv4::verify(&req, secret, now, "ecs") {
        assert!(!e.message().is_empty());
    }
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body.as_bytes()) {
        if let Ok(p) = Policy::parse(&doc) {
            let _ = p.decide("ecs:RunTask", "arn:aws:ecs:us-east-1:0:cluster/default");
        }
    }
});
