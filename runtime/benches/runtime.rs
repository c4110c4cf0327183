//! `cargo bench -p skiff-runtime`: what the runtime's choices cost, as
//! numbers and ratios measured in one run on this machine.
//!
//! 1. compile vs cached load of hello-http;
//! 2. instantiate-and-handle one request in process, pooling vs on-demand;
//! 3. a CPU-bound guest with no metering vs epoch only vs epoch + fuel.
//!
//! `cargo bench -p skiff-runtime -- http` runs only the second (the words
//! load, http and cpu pick parts).
//!
//! Rounds alternate between the variants so that drift in the machine's
//! load hits all of them alike; each figure is the median of its rounds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use skiff_runtime::{
    Allocation, Budget, HttpHandler, Limits, Metering, Outcome, RunLimits, Runtime, RuntimeConfig,
    Sandbox,
};

fn dist(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/dist")
        .join(name)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn load_bench() {
    let bytes = std::fs::read(dist("hello-http.wasm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let (mut compile, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(dir.path());
        let rt = Runtime::new(config()).unwrap();
        let t = Instant::now();
        let g = rt.load(&bytes).unwrap();
        compile.push(t.elapsed());
        assert!(!g.from_cache());
        drop(rt);

        let rt = Runtime::new(config()).unwrap();
        let t = Instant::now();
        let g = rt.load(&bytes).unwrap();
        cached.push(t.elapsed());
        assert!(g.from_cache());
    }
    let (c, l) = (median(compile), median(cached));
    println!("load hello-http.wasm ({} KiB)", bytes.len() / 1024);
    println!("  compile          {:>12}", ms(c));
    println!(
        "  cached load      {:>12}   ({:.0}x faster)",
        ms(l),
        c.as_secs_f64() / l.as_secs_f64()
    );
}

fn request() -> hyper::Request<http_body_util::Empty<bytes::Bytes>> {
    hyper::Request::builder()
        .uri("http://localhost/")
        .body(http_body_util::Empty::new())
        .unwrap()
}

fn http_round(h: &HttpHandler, n: usize) -> Duration {
    block_on(async {
        let t = Instant::now();
        for _ in 0..n {
            let resp = h.handle(request()).await.expect("response");
            use http_body_util::BodyExt;
            let _ = resp.into_body().collect().await.unwrap();
        }
        t.elapsed() / n as u32
    })
}

fn http_bench() {
    let make = |allocation| {
        let rt = Runtime::new(RuntimeConfig {
            allocation,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let g = rt.load_file(dist("hello-http.wasm")).unwrap();
        let h = HttpHandler::new(
            &rt,
            &g,
            Budget::new(Limits::default()),
            Sandbox::default(),
            RunLimits::default(),
        )
        .unwrap();
        (rt, h)
    };
    let (pool_rt, pool) = make(Allocation::Pooling);
    let (_od_rt, on_demand) = make(Allocation::OnDemand);
    let (_reuse_rt, reused) = make(Allocation::Pooling);
    let reused = reused.reuse_instances(1000);
    assert!(pool_rt.is_pooling());
    let n = 2000;
    http_round(&pool, 200);
    http_round(&on_demand, 200);
    http_round(&reused, 200);
    let (mut p, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        p.push(http_round(&pool, n));
        o.push(http_round(&on_demand, n));
        r.push(http_round(&reused, n));
    }
    let (p, o, r) = (median(p), median(o), median(r));
    println!("instantiate + handle one request of hello-http, in process, one thread");
    println!(
        "  pooling          {:>12}   ({:.0} requests/s)",
        us(p),
        1.0 / p.as_secs_f64()
    );
    println!(
        "  on-demand        {:>12}   ({:.0} requests/s)",
        us(o),
        1.0 / o.as_secs_f64()
    );
    println!(
        "  on-demand / pooling: {:.2}x the time",
        o.as_secs_f64() / p.as_secs_f64()
    );
    println!(
        "  instance reused (skiff.instance-reuse: 1000) {:>12}   ({:.0} requests/s), {:.2}x pooling's time",
        us(r),
        1.0 / r.as_secs_f64(),
        r.as_secs_f64() / p.as_secs_f64()
    );
}

fn cpu_bench() {
    let iterations = "300000000";
    let variants = [
        ("no metering", Metering::None),
        ("epoch only", Metering::EpochOnly),
        ("epoch + fuel", Metering::Full),
    ];
    let runtimes: Vec<_> = variants
        .iter()
        .map(|(_, m)| {
            let rt = Runtime::new(RuntimeConfig {
                metering: *m,
                ..RuntimeConfig::default()
            })
            .unwrap();
            let g = rt.load_file(dist("spin.wasm")).unwrap();
            (rt, g)
        })
        .collect();
    let sandbox = Sandbox {
        args: vec!["spin".into(), iterations.into()],
        ..Sandbox::default()
    };
    let mut times = vec![Vec::new(); variants.len()];
    for _ in 0..5 {
        for (i, (rt, g)) in runtimes.iter().enumerate() {
            let r = block_on(rt.run(
                g,
                &Budget::new(Limits::default()),
                &sandbox,
                RunLimits::default(),
            ));
            assert_eq!(r.outcome, Outcome::Exit(0));
            times[i].push(r.wall);
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    println!("CPU-bound guest (spin {iterations})");
    for ((name, _), t) in variants.iter().zip(&medians) {
        println!(
            "  {name:<16} {:>12}   ({:.2}x no metering)",
            ms(*t),
            t.as_secs_f64() / medians[0].as_secs_f64()
        );
    }
}

fn main() {
    // `cargo bench -p skiff-runtime -- http` runs the parts whose names
    // (load, http, cpu) contain a word given; no word runs them all.
    // Flags (`--bench`, which cargo passes) are not words.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let parts: [(&str, fn()); 3] = [
        ("load", load_bench),
        ("http", http_bench),
        ("cpu", cpu_bench),
    ];
    for (name, run) in parts {
        if words.is_empty() || words.iter().any(|w| name.contains(w.as_str())) {
            run();
        }
    }
}
