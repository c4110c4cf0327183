//! The vendored wasmtime's patch (vendor/wasmtime.patch): function
//! references built from locations resolved at load must reach the right
//! code, with the engine's code shared by every store and with guest
//! debugging, which gives each store its own copy.
//!
//! Every function reaches here a different way: exported and called from
//! the host (its array-call trampoline), put in a table and called
//! indirectly (its body), imported by a second module that calls it, taken
//! with `ref.func`, and the start function (not an escaping function: the
//! unpatched path).

use wasmtime::{Config, Engine, Instance, Module, Store};

const PROVIDER: &str = r#"
(module
  (global $started (mut i32) (i32.const 0))
  (table $t 4 funcref)
  (elem (table $t) (i32.const 0) func $one $two $three)
  (elem declare func $seven)
  (func $one (result i32) i32.const 1)
  (func $two (result i32) i32.const 2)
  (func $three (result i32) i32.const 3)
  (func $seven (result i32) i32.const 7)
  (func $start (global.set $started (i32.const 100)))
  (start $start)
  (func (export "dispatch") (param i32) (result i32)
    local.get 0
    call_indirect $t (result i32))
  (func (export "install_seven")
    (table.set $t (i32.const 3) (ref.func $seven)))
  (func (export "started") (result i32) global.get $started)
  (export "two" (func $two))
  (export "three" (func $three))
  (export "table" (table $t)))
"#;

const CONSUMER: &str = r#"
(module
  (import "p" "two" (func $two (result i32)))
  (import "p" "three" (func $three (result i32)))
  (func (export "sum") (result i32)
    call $two
    call $three
    i32.add
    i32.const 10
    i32.mul))
"#;

/// Instantiates both modules `rounds` times, in one store and in new
/// stores, and checks every way in.
fn exercise(engine: &Engine) {
    let provider = Module::new(engine, PROVIDER).expect("provider compiles");
    let consumer = Module::new(engine, CONSUMER).expect("consumer compiles");
    let mut shared = Store::new(engine, ());
    for round in 0..3 {
        let mut own = Store::new(engine, ());
        for store in [&mut shared, &mut own] {
            let p = Instance::new(&mut *store, &provider, &[]).expect("provider instantiates");
            let started = p.get_typed_func::<(), i32>(&mut *store, "started").unwrap();
            assert_eq!(
                started.call(&mut *store, ()).unwrap(),
                100,
                "round {round}: start ran"
            );

            let two = p.get_typed_func::<(), i32>(&mut *store, "two").unwrap();
            assert_eq!(
                two.call(&mut *store, ()).unwrap(),
                2,
                "round {round}: export"
            );

            let dispatch = p
                .get_typed_func::<i32, i32>(&mut *store, "dispatch")
                .unwrap();
            for (slot, want) in [(0, 1), (1, 2), (2, 3)] {
                assert_eq!(
                    dispatch.call(&mut *store, slot).unwrap(),
                    want,
                    "round {round}: table slot {slot}"
                );
            }
            let install = p
                .get_typed_func::<(), ()>(&mut *store, "install_seven")
                .unwrap();
            install.call(&mut *store, ()).unwrap();
            assert_eq!(
                dispatch.call(&mut *store, 3).unwrap(),
                7,
                "round {round}: ref.func"
            );

            let table = p.get_table(&mut *store, "table").unwrap();
            let first = table.get(&mut *store, 0).unwrap();
            let first = first.unwrap_func().expect("slot 0 holds a function");
            let first = first.typed::<(), i32>(&*store).unwrap();
            assert_eq!(
                first.call(&mut *store, ()).unwrap(),
                1,
                "round {round}: table read by the host"
            );

            let imports = [
                p.get_func(&mut *store, "two").unwrap().into(),
                p.get_func(&mut *store, "three").unwrap().into(),
            ];
            let c = Instance::new(&mut *store, &consumer, &imports).expect("consumer instantiates");
            let sum = c.get_typed_func::<(), i32>(&mut *store, "sum").unwrap();
            assert_eq!(
                sum.call(&mut *store, ()).unwrap(),
                50,
                "round {round}: imported exports"
            );
        }
    }
}

#[test]
fn function_references_reach_their_code_with_the_engines_code() {
    exercise(&Engine::new(&Config::new()).unwrap());
}

#[test]
fn function_references_reach_their_code_with_each_stores_own_copy() {
    let mut config = Config::new();
    config.guest_debug(true);
    exercise(&Engine::new(&config).unwrap());
}

#[test]
fn function_references_reach_their_code_from_the_pool() {
    let mut config = Config::new();
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_core_instances(16)
        .total_memories(16)
        .total_tables(16);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    exercise(&Engine::new(&config).unwrap());
}
