//! Hot reload: a module replaced while flows stream through it. Every flow is
//! decided exactly once, by the old or the new version (never both, never
//! none, and never the old one again after the swap); a broken replacement
//! keeps the running version.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{flow, rust_example, write_module};
use hubble_proto::flow::Verdict;
use porin_wasm::{Reason, WasmKind, WasmMetrics, WasmModuleConfig, WasmModules, Watcher};

/// A filter whose every decision is `keep`.
fn constant_filter(keep: i32) -> String {
    format!(
        r#"(module
  (memory (export "memory") 5)
  (func (export "porin_flow_0_1") (result i32) i32.const 1)
  (func (export "porin_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "porin_init") (param i32 i32) (result i32) i32.const 0)
  (func (export "porin_filter") (param $b i32) (result i32)
    (local $i i32) (local $count i32) (local $res i32)
    (local.set $count (i32.load (local.get $b)))
    (local.set $res (i32.add (local.get $b) (i32.load offset=12 (local.get $b))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
      (i32.store8 (i32.add (local.get $res) (local.get $i)) (i32.const {keep}))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    i32.const 0))"#
    )
}

/// Replace `path` atomically (write then rename), as deployments do.
fn replace(path: &std::path::Path, bytes: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn replacing_a_module_under_load_loses_and_repeats_no_flow() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_module(dir.path(), "swap", constant_filter(1));
    let metrics = Arc::new(WasmMetrics::default());
    let config = WasmModuleConfig::new("swap", &path, WasmKind::Filter);
    let modules = Arc::new(WasmModules::load(&[config], metrics.clone()).expect("engine"));
    let _watcher = Watcher::spawn(modules.clone(), Duration::from_millis(20)).expect("watcher");

    let stop = Arc::new(AtomicBool::new(false));
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let fed = std::thread::spawn({
        let (modules, stop, decisions) = (modules.clone(), stop.clone(), decisions.clone());
        move || {
            let batch: Vec<_> = (0..64)
                .map(|_| flow("a", "b", 80, Verdict::Forwarded))
                .collect();
            let mut fed = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let keep = modules.filter(&batch);
                assert_eq!(keep.len(), batch.len(), "one decision per flow");
                fed += batch.len();
                decisions.lock().expect("lock").extend(keep);
            }
            fed
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    replace(&path, constant_filter(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while modules.status()[0].reloads == 0 {
        assert!(
            Instant::now() < deadline,
            "not reloaded: {:?}",
            modules.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let fed = fed.join().expect("feeder");

    let decisions = decisions.lock().expect("lock");
    assert_eq!(decisions.len(), fed, "no flow lost");
    assert_eq!(
        modules.status()[0].flows as usize,
        fed,
        "no flow processed twice"
    );
    let swap = decisions
        .iter()
        .position(|k| !k)
        .expect("the new version ran");
    assert!(swap > 0, "the old version ran first");
    assert!(
        decisions[..swap].iter().all(|k| *k),
        "old version before the swap"
    );
    assert!(
        decisions[swap..].iter().all(|k| !k),
        "only the new version after it"
    );
    assert_eq!(swap % 64, 0, "the swap falls between batches");
}

#[test]
fn a_broken_replacement_keeps_the_running_version() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_module(dir.path(), "keeper", constant_filter(0));
    let metrics = Arc::new(WasmMetrics::default());
    let config = WasmModuleConfig::new("keeper", &path, WasmKind::Filter);
    let modules = WasmModules::load(&[config], metrics.clone()).expect("engine");
    let one = vec![flow("a", "b", 80, Verdict::Forwarded)];
    assert_eq!(modules.filter(&one), vec![false]);

    for (bytes, reason, says) in [
        (
            b"not wasm at all".to_vec(),
            Reason::Load,
            "not a valid WebAssembly module",
        ),
        (
            constant_filter(1)
                .replace("porin_flow_0_1", "porin_flow_1_0")
                .into_bytes(),
            Reason::Version,
            "porin:flow@1.0",
        ),
        (
            constant_filter(1)
                .replace(
                    "(param i32 i32) (result i32) i32.const 0",
                    "(param i32 i32) (result i32) i32.const 7",
                )
                .into_bytes(),
            Reason::Init,
            "init refused its configuration (code 7)",
        ),
        (
            std::fs::read(rust_example("team-labeller")).expect("labeller"),
            Reason::Contract,
            "is a labeller",
        ),
    ] {
        replace(&path, &bytes);
        let err = modules.modules()[0]
            .reload_if_changed()
            .expect("change seen")
            .expect_err("refused");
        assert_eq!(err.reason, reason, "{err}");
        assert!(err.to_string().contains(says), "{err}");
        let status = &modules.status()[0];
        assert_eq!(status.state, "running", "{status:?}");
        assert!(status.last_reload_error.is_some(), "{status:?}");
        assert_eq!(
            modules.filter(&one),
            vec![false],
            "the old version still decides"
        );
        assert_eq!(metrics.errors("keeper", reason), 1);
    }
    // An unchanged file is not tried again.
    assert!(modules.modules()[0].reload_if_changed().is_none());

    replace(&path, constant_filter(1));
    let took = modules.modules()[0]
        .reload_if_changed()
        .expect("change seen")
        .expect("reloaded");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(modules.filter(&one), vec![true]);
    assert_eq!(modules.status()[0].last_reload_error, None);
}
