//! API request bodies: the first byte picks an action (in the order of
//! `skiff::api::targets()`, then one unknown), the rest is its
//! body, handled by a real engine (store, workers, scheduler) in a
//! temporary directory. Nothing panics, and no input is answered with a
//! ServerException (5xx): whatever is wrong with a request is the
//! client's error, with a 4xx.
//!
//! A body that is JSON is also sent a second time with multi-byte
//! characters put into every string in it (at a place the input picks), so
//! that every string field, not only the ones mutation happens to reach,
//! is tried with text that byte offsets would cut mid-character.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
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
            hollow: false,
            store: None,
            attribute: Vec::new(),
            node_ttl: std::time::Duration::from_secs(5),
            scale_in_window: std::time::Duration::from_secs(60),
            advertise_ingress: None,
            advertise_api: None,
            registry: skiff::cli::push::RegistryArgs {
                insecure_registry: Vec::new(),
                docker_config: None,
                registry_secrets: None,
                max_image_mib: 16,
                image_cache_mib: 64,
            },
            tls: Default::default(),
        };
        let engine = rt.block_on(server.start()).expect("engine");
        Ctx { _rt: rt, engine }
    })
}

/// Characters of 2, 3 and 4 bytes, a control character and a combining
/// mark.
const INSERTS: &[&str] = &["\u{e9}", "\u{65e5}\u{672c}", "\u{1f600}", "\u{0}", "e\u{301}"];

/// `s` with one of [`INSERTS`] put in at a character boundary, both
/// chosen by the next byte of `salt`.
fn spice(s: &str, salt: &mut impl Iterator<Item = u8>) -> String {
    let pick = salt.next().unwrap_or(0) as usize;
    let insert = INSERTS[pick % INSERTS.len()];
    let boundaries: Vec<usize> = s
        .char_indices()
        .map(|(i, _)| i)
        .chain([s.len()])
        .collect();
    let at = boundaries[(pick / INSERTS.len()) % boundaries.len()];
    format!("{}{insert}{}", &s[..at], &s[at..])
}

/// Puts multi-byte text into every string of `v` (and into half of the
/// keys, so that most fields are still recognised).
fn multibyte(v: &mut Value, salt: &mut impl Iterator<Item = u8>) {
    match v {
        Value::String(s) => *s = spice(s, salt),
        Value::Array(items) => {
            for i in items.iter_mut() {
                multibyte(i, salt);
            }
        }
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut item) in entries {
                multibyte(&mut item, salt);
                let key = if salt.next().unwrap_or(0) % 2 == 0 {
                    k
                } else {
                    spice(&k, salt)
                };
                map.insert(key, item);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let targets = targets();
    let target = &targets[pick as usize % targets.len()];
    let scope = Scope::new("us-east-1", "000000000000");
    let c = ctx();
    let check = |body: &[u8]| {
        if let Err(e) = skiff::api::call(&c.engine.api, &scope, target, body, None) {
            assert!(
                e.kind != Kind::Server,
                "{target} answered 5xx for {:?}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    };
    check(body);
    if let Ok(mut v) = serde_json::from_slice::<Value>(body) {
        let mut salt = body.iter().rev().copied().cycle();
        multibyte(&mut v, &mut salt);
        check(&serde_json::to_vec(&v).unwrap_or_default());
    }
});
