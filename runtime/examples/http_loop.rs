//! Serves N in-process requests to hello-http on one thread, for profiling
//! the per-request path: `cargo run --release -p skiff-runtime --example
//! http_loop -- 20000` (under `perf record` to see where the time goes).
//! SKIFF_KEEP_RESIDENT=BYTES sets `RuntimeConfig::memory_keep_resident`;
//! SKIFF_CACHE_DIR=DIR keeps the compiled guest there, so that a second run
//! does not compile (for counting instructions per request with callgrind:
//! run it twice with different N and divide the difference);
//! SKIFF_REUSE=N lets one instance serve N requests
//! ([`HttpHandler::reuse_instances`]).

use std::time::Instant;

use http_body_util::BodyExt;
use skiff_runtime::{Budget, HttpHandler, Limits, RunLimits, Runtime, RuntimeConfig, Sandbox};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/dist/hello-http.wasm");
    let mut config = RuntimeConfig::default();
    if let Some(k) = std::env::var("SKIFF_KEEP_RESIDENT")
        .ok()
        .and_then(|k| k.parse().ok())
    {
        config.memory_keep_resident = k;
    }
    if let Some(dir) = std::env::var_os("SKIFF_CACHE_DIR") {
        config.cache_dir = Some(dir.into());
    }
    let rt = Runtime::new(config).expect("runtime");
    let guest = rt.load_file(&path).expect("load");
    let h = HttpHandler::new(
        &rt,
        &guest,
        Budget::new(Limits::default()),
        Sandbox::default(),
        RunLimits::default(),
    )
    .expect("handler")
    .reuse_instances(
        std::env::var("SKIFF_REUSE")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
    );
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let t0 = Instant::now();
        for _ in 0..n {
            let req = hyper::Request::builder()
                .uri("http://localhost/")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = h.handle(req).await.expect("response");
            let _ = resp.into_body().collect().await;
        }
        let per = t0.elapsed() / n;
        println!(
            "{n} requests, {per:?} each ({:.0}/s)",
            1.0 / per.as_secs_f64()
        );
    });
}
