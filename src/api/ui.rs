//! The dashboard: `GET /ui/` on the API listener. Its files (`ui/` in the
//! repository, plain HTML, CSS and JavaScript with no build step) are
//! compiled into the binary. They hold no data and are served to anyone;
//! everything the page shows comes from API calls it signs with the key
//! the user signs in with, so the key's policy decides what it sees and
//! may do, as for any other client.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use hyper::{HeaderMap, Response, StatusCode};

/// Where the dashboard lives.
pub const PREFIX: &str = "/ui/";

/// The dashboard's files: (name under /ui/, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "sigv4.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/sigv4.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// What the page may load and call: only this origin, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is the dashboard's.
pub fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with(PREFIX)
}

/// A file's entity tag: its FNV-1a hash, so a browser revalidates cheaply
/// and a new binary's files are never served stale from its cache.
fn etag(body: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// Answers `GET path` for a path [`owns`] accepts.
pub fn serve(path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    if path == "/ui" {
        return redirect(PREFIX);
    }
    let name = &path[PREFIX.len()..];
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return super::text_response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("the dashboard has no file {name:?}; open {PREFIX}\n"),
        );
    };
    let tag = etag(body);
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(ETAG, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// A browser that opens the API's root is sent to the dashboard (API
/// clients POST to `/`, and never ask for HTML).
pub fn wants_dashboard(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// A 302 to `to`.
pub fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_served_with_their_types_and_revalidated_by_tag() {
        let none = HeaderMap::new();
        let r = serve("/ui/", &none);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let tag = r.headers()[ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, tag);
        assert_eq!(serve("/ui/", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("/ui/app.js", &none).headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(serve("/ui/nope.js", &none).status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("/ui", &none).headers()[LOCATION], "/ui/");
        assert!(owns("/ui") && owns("/ui/app.js") && !owns("/uix"));
    }
}
