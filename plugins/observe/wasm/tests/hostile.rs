//! Hostile and broken modules: each is contained with the right reason
//! (status, `porin_wasm_module_errors_total`), flows pass per its `fail` mode,
//! and the other modules of the pipeline keep working.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{c_example, flow, write_module};
use hubble_proto::flow::Verdict;
use porin_wasm::{
    FailMode, ModuleStatus, Reason, WasiCapability, WasmKind, WasmMetrics, WasmModuleConfig,
    WasmModules,
};

/// A filter module in WAT with `body` as `porin_filter` (param `$b`) and
/// `init` as `porin_init`.
fn filter_wat(imports: &str, init: &str, body: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 5)
  (func (export "porin_flow_0_1") (result i32) i32.const 1)
  (func (export "porin_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "porin_init") (param i32 i32) (result i32) {init})
  (func (export "porin_filter") (param $b i32) (result i32) {body}))"#
    )
}

/// A labeller declaring `team` whose `porin_label` is `body`.
fn labeller_wat(body: &str) -> String {
    format!(
        r#"(module
  (import "porin" "declare_label" (func $declare (param i32 i32) (result i32)))
  (import "porin" "set_label" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 5)
  (data (i32.const 512) "team")
  (data (i32.const 520) "owner")
  (global $n (mut i32) (i32.const 0))
  (func (export "porin_flow_0_1") (result i32) i32.const 2)
  (func (export "porin_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "porin_init") (param i32 i32) (result i32)
    (call $declare (i32.const 512) (i32.const 4)))
  (func (export "porin_label") (param $b i32) (result i32) {body}))"#
    )
}

/// Keeps every flow: the `porin_filter` body writing 1 for each.
const KEEP_ALL: &str = r#"
    (local $i i32) (local $count i32) (local $res i32)
    (local.set $count (i32.load (local.get $b)))
    (local.set $res (i32.add (local.get $b) (i32.load offset=12 (local.get $b))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
      (i32.store8 (i32.add (local.get $res) (local.get $i)) (i32.const 1))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    i32.const 0"#;

struct Case {
    modules: WasmModules,
    metrics: Arc<WasmMetrics>,
}

impl Case {
    /// The hostile module `name` (kind, `fail`) next to a healthy C filter
    /// keeping only drops.
    fn new(
        dir: &Path,
        name: &str,
        module: String,
        kind: WasmKind,
        tune: impl FnOnce(&mut WasmModuleConfig),
    ) -> Self {
        let path = write_module(dir, name, module);
        let mut config = WasmModuleConfig::new(name, path, kind);
        config.deadline_ms = 50;
        tune(&mut config);
        let healthy = WasmModuleConfig::new(
            "healthy",
            c_example("keep_drops_dns_errors"),
            WasmKind::Filter,
        );
        let metrics = Arc::new(WasmMetrics::default());
        let modules = WasmModules::load(&[config, healthy], metrics.clone()).expect("engine");
        Self { modules, metrics }
    }

    fn status(&self) -> ModuleStatus {
        self.modules.status()[0].clone()
    }

    /// The pipeline goes on: the healthy filter still decides.
    fn assert_pipeline_runs(&self) {
        let flows = vec![
            flow("a", "b", 80, Verdict::Forwarded),
            flow("a", "b", 80, Verdict::Dropped),
        ];
        assert_eq!(self.modules.filter(&flows), vec![false, true]);
        assert_eq!(self.modules.status()[1].state, "running");
    }

    fn assert_down(&self, state: &str, reason: Reason, message_has: &str) {
        let s = self.status();
        assert_eq!(s.state, state, "{s:?}");
        assert_eq!(s.reason.as_deref(), Some(reason.as_str()), "{s:?}");
        let message = s.message.unwrap_or_default();
        assert!(
            message.contains(message_has),
            "`{message_has}` not in `{message}`"
        );
        assert_eq!(
            self.metrics.errors(&s.name, reason),
            1,
            "errors_total{{reason={reason}}}"
        );
    }
}

fn flows(n: usize) -> Vec<hubble_proto::flow::Flow> {
    (0..n)
        .map(|_| flow("a", "b", 80, Verdict::Forwarded))
        .collect()
}

#[test]
fn an_infinite_loop_overruns_its_deadline_and_is_quarantined() {
    let dir = tempfile::tempdir().expect("dir");
    let case = Case::new(
        dir.path(),
        "spin",
        filter_wat("", "i32.const 0", "(loop $l (br $l)) i32.const 0"),
        WasmKind::Filter,
        |_| {},
    );
    let started = Instant::now();
    assert_eq!(
        case.modules.filter(&flows(3)),
        vec![false; 3],
        "healthy filter keeps no forwarded flow"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    case.assert_down(
        "quarantined",
        Reason::Deadline,
        "deadline of 50 ms of CPU time",
    );
    case.assert_pipeline_runs();
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    let dir = tempfile::tempdir().expect("dir");
    let bomb = "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) i32.const 0";
    let case = Case::new(
        dir.path(),
        "bomb",
        filter_wat("", "i32.const 0", bomb),
        WasmKind::Filter,
        |c| c.memory_mib = 8,
    );
    case.modules.filter(&flows(1));
    case.assert_down(
        "quarantined",
        Reason::Memory,
        "over the cap of 8388608 bytes",
    );
    case.assert_pipeline_runs();
}

#[test]
fn a_trap_quarantines_and_fail_closed_drops_every_flow() {
    let dir = tempfile::tempdir().expect("dir");
    let case = Case::new(
        dir.path(),
        "trap",
        filter_wat("", "i32.const 0", "unreachable"),
        WasmKind::Filter,
        |c| c.fail = FailMode::Closed,
    );
    case.modules.filter(&flows(1));
    case.assert_down("quarantined", Reason::Trap, "unreachable");
    // Closed: nothing passes, even the drops the healthy filter keeps.
    let drop = vec![flow("a", "b", 80, Verdict::Dropped)];
    assert_eq!(case.modules.filter(&drop), vec![false]);
    assert_eq!(
        case.metrics.errors("trap", Reason::Trap),
        1,
        "counted once, not per batch"
    );
}

#[test]
fn a_trap_with_fail_open_lets_flows_pass() {
    let dir = tempfile::tempdir().expect("dir");
    let case = Case::new(
        dir.path(),
        "trap",
        filter_wat("", "i32.const 0", "unreachable"),
        WasmKind::Filter,
        |_| {},
    );
    case.modules.filter(&flows(1));
    case.assert_down("quarantined", Reason::Trap, "unreachable");
    case.assert_pipeline_runs();
}

#[test]
fn missing_or_mistyped_exports_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let no_filter = filter_wat("", "i32.const 0", KEEP_ALL).replace("\"porin_filter\"", "\"keep\"");
    let case = Case::new(dir.path(), "nofilter", no_filter, WasmKind::Filter, |_| {});
    case.assert_down(
        "failed",
        Reason::Contract,
        "must export function `porin_filter`",
    );
    case.assert_pipeline_runs();

    let mistyped =
        filter_wat("", "i32.const 0", "i32.const 0").replace("(param $b i32)", "(param $b i64)");
    let case = Case::new(dir.path(), "mistyped", mistyped, WasmKind::Filter, |_| {});
    case.assert_down("failed", Reason::Contract, "export `porin_filter` has type");

    let case = Case::new(
        dir.path(),
        "notwasm",
        "\0asm garbage".to_string(),
        WasmKind::Filter,
        |_| {},
    );
    case.assert_down("failed", Reason::Load, "not a valid WebAssembly module");

    let not_porin = "(module (memory (export \"memory\") 1))".to_string();
    let case = Case::new(dir.path(), "plain", not_porin, WasmKind::Filter, |_| {});
    case.assert_down("failed", Reason::Contract, "not a porin:flow@0.1 module");
}

#[test]
fn the_wrong_kind_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let case = Case::new(
        dir.path(),
        "kind",
        labeller_wat("i32.const 0"),
        WasmKind::Filter,
        |_| {},
    );
    case.assert_down(
        "failed",
        Reason::Contract,
        "is a labeller (exports `porin_label`)",
    );
}

#[test]
fn another_contract_version_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let v2 = filter_wat("", "i32.const 0", KEEP_ALL).replace("porin_flow_0_1", "porin_flow_2_0");
    let case = Case::new(dir.path(), "v2", v2, WasmKind::Filter, |_| {});
    case.assert_down("failed", Reason::Version, "built for porin:flow@2.0");
    case.assert_pipeline_runs();
}

#[test]
fn wasi_is_refused_unless_granted() {
    let dir = tempfile::tempdir().expect("dir");
    let import = r#"(import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (data (i32.const 256) "hello from a module\n")
  (data (i32.const 300) "\00\01\00\00\14\00\00\00")"#;
    // init writes one line to stdout through fd_write.
    let init =
        "(drop (call $w (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 320))) i32.const 0";
    let module = filter_wat(import, init, KEEP_ALL);
    let case = Case::new(dir.path(), "wasi", module.clone(), WasmKind::Filter, |_| {});
    case.assert_down(
        "failed",
        Reason::Wasi,
        "capability `stdio`), which was not granted",
    );
    case.assert_pipeline_runs();

    let granted = Case::new(dir.path(), "wasi", module, WasmKind::Filter, |c| {
        c.wasi = vec![WasiCapability::Stdio]
    });
    assert_eq!(granted.status().state, "running", "{:?}", granted.status());
    assert_eq!(granted.modules.filter(&flows(2)), vec![false; 2]);

    let files = filter_wat(
        r#"(import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#,
        "i32.const 0",
        KEEP_ALL,
    );
    let case = Case::new(dir.path(), "files", files, WasmKind::Filter, |c| {
        c.wasi = vec![WasiCapability::Stdio]
    });
    case.assert_down("failed", Reason::Wasi, "Porin never grants");

    let other = filter_wat(r#"(import "env" "socket" (func))"#, "i32.const 0", KEEP_ALL);
    let case = Case::new(dir.path(), "env", other, WasmKind::Filter, |_| {});
    case.assert_down("failed", Reason::Import, "`env.socket`");
}

#[test]
fn an_endless_loop_in_init_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("dir");
    let case = Case::new(
        dir.path(),
        "slowinit",
        filter_wat("", "(loop $l (br $l)) i32.const 0", KEEP_ALL),
        WasmKind::Filter,
        |_| {},
    );
    case.assert_down("failed", Reason::Deadline, "deadline");
    case.assert_pipeline_runs();
}

#[test]
fn a_labeller_setting_an_undeclared_label_is_quarantined() {
    let dir = tempfile::tempdir().expect("dir");
    let body = "(drop (call $set (i32.const 0) (i32.const 520) (i32.const 5) (i32.const 512) (i32.const 4))) i32.const 0";
    let case = Case::new(
        dir.path(),
        "owner",
        labeller_wat(body),
        WasmKind::Labeller,
        |_| {},
    );
    assert_eq!(case.status().labels, vec!["team"]);
    let labels = case.modules.labels(&flows(2));
    assert_eq!(
        labels[0],
        vec![("team".to_string(), String::new())],
        "fail open: empty"
    );
    case.assert_down(
        "quarantined",
        Reason::Label,
        "set label `owner`, which it did not declare",
    );
    case.assert_pipeline_runs();
}

#[test]
fn a_labeller_with_endless_values_is_capped_at_other() {
    let dir = tempfile::tempdir().expect("dir");
    // Each flow gets a new 4-letter value derived from a counter.
    let body = r#"
    (local $i i32) (local $count i32) (local $k i32)
    (local.set $count (i32.load (local.get $b)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (local.set $k (i32.const 0))
      (loop $digit
        (i32.store8 (i32.add (i32.const 600) (local.get $k))
          (i32.add (i32.const 97)
            (i32.and (i32.shr_u (global.get $n) (i32.mul (local.get $k) (i32.const 4))) (i32.const 15))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br_if $digit (i32.lt_u (local.get $k) (i32.const 4))))
      (drop (call $set (local.get $i) (i32.const 512) (i32.const 4) (i32.const 600) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    i32.const 0"#;
    let case = Case::new(
        dir.path(),
        "endless",
        labeller_wat(body),
        WasmKind::Labeller,
        |c| c.max_label_values = 10,
    );
    let labels = case.modules.labels(&flows(100));
    let distinct: std::collections::HashSet<_> = labels.iter().map(|l| l[0].1.clone()).collect();
    assert_eq!(distinct.len(), 11, "10 values and `other`: {distinct:?}");
    assert!(distinct.contains("other"));
    assert_eq!(labels[99][0].1, "other");
    assert_eq!(case.status().state, "running", "capping is not a failure");
    assert_eq!(case.metrics.errors("endless", Reason::Cardinality), 90);
}

#[test]
fn a_labeller_declaring_a_hubble_label_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let module = labeller_wat("i32.const 0").replace("\"team\"", "\"port\"");
    let case = Case::new(dir.path(), "port", module, WasmKind::Labeller, |_| {});
    case.assert_down("failed", Reason::Label, "one of Hubble's own metric labels");
}
