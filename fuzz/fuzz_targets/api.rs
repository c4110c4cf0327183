//! API request bodies: the first byte picks an action (in the order of
//! `skiff::api::targets()`, then one unknown), the rest is its
//! body, handled by a real engine (store, workers, scheduler) in a
//! temporary directory. Nothing panics, and no input is answered with a
//! ServerException (5xx): whatever is wrong with a request is the
//! client's error, with a 4xx.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff::api::error::Kind;
use skiff::cli::server::{Engine, Server};
use skiff::model::arn::Scope;

/// Every target the API answers, and one it does not.
fn targets() -> &'static [String] {
    static TARGETS: OnceLock<Vec<String>> = OnceLock::new();
    TARGETS.get_or_init(|| {
        skiff::api::targets()
            .chain([format!("{}.NoSuchAction", skiff::api::ECS_TARGET)])
            .collect()
    })
}

struct Ctx {
    _rt: tokio::runtime::Runtime,
    engine: Engine,
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("skiff-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let server = Server {
            data_dir: dir,
            api: "127.0.0.1:0".parse().unwrap(),
            ingress: "127.0.0.1:0".parse().unwrap(),
            account: "000000000000".into(),
            region: "us-east-1".into(),
            workers: Some(1),
            memory: Some(256),
            domain: "localhost".into(),
            max_request_body: 1 << 20,
            auth: None,
            insecure_no_auth: false,
            api_connections: 16,
            host_root: Vec::new(),
            stopped_task_ttl: std::time::Duration::from_secs(60),
        };
        let engine = rt.block_on(server.start()).expect("engine");
        Ctx { _rt: rt, engine }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let targets = targets();
    let target = &targets[pick as usize % targets.len()];
    let scope = Scope {
        region: "us-east-1".into(),
        account: "000000000000".into(),
    };
    let c = ctx();
    if let Err(e) = skiff::api::call(&c.engine.api, &scope, target, body, None) {
        assert!(
            e.kind != Kind::Server,
            "{target} answered 5xx for {:?}: {e}",
            String::from_utf8_lossy(body)
        );
    }
});
