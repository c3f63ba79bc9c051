//! One configured module over time: loaded, running, quarantined, reloaded.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use hubble_proto::flow::Flow;
use serde::Serialize;
use tracing::{error, info, warn};
use wasmtime::Engine;

use crate::cardinality::Cardinality;
use crate::config::{FailMode, WasmKind, WasmModuleConfig};
use crate::cpu::thread_cpu_time;
use crate::error::{CallError, LoadError, Reason};
use crate::instance::{Instance, compile};
use crate::metrics::WasmMetrics;

/// A label value of a quarantined labeller in `fail = "closed"` mode.
pub const QUARANTINED_VALUE: &str = "quarantined";

/// What identifies a version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

struct Slot {
    instance: Option<Instance>,
    /// Why the module is not running (quarantined, or never loaded).
    down: Option<(Reason, String)>,
    /// The file version last tried, loaded or not.
    stamp: Option<FileStamp>,
    last_reload_error: Option<String>,
    labels: Vec<String>,
    cardinality: Cardinality,
}

/// The state shown by `porin plugins list` and the observe plugin's status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModuleStatus {
    pub name: String,
    pub kind: &'static str,
    pub path: String,
    /// `running`, `quarantined` (failed while running) or `failed` (never loaded).
    pub state: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub fail: &'static str,
    pub labels: Vec<String>,
    pub flows: u64,
    pub cpu_seconds: f64,
    pub reloads: u64,
    pub last_reload_error: Option<String>,
}

/// A configured module.
pub struct WasmModule {
    config: WasmModuleConfig,
    engine: Engine,
    metrics: Arc<WasmMetrics>,
    slot: Mutex<Slot>,
    flows: AtomicU64,
    cpu_ns: AtomicU64,
    reloads: AtomicU64,
    ever_ran: std::sync::atomic::AtomicBool,
}

impl WasmModule {
    /// Load the module; a failure leaves it down (flows pass per `fail`) and
    /// is logged and counted, the agent goes on.
    pub fn load(engine: &Engine, config: WasmModuleConfig, metrics: Arc<WasmMetrics>) -> Self {
        let this = Self {
            slot: Mutex::new(Slot {
                instance: None,
                down: None,
                stamp: None,
                last_reload_error: None,
                labels: Vec::new(),
                cardinality: Cardinality::new(0, 0),
            }),
            engine: engine.clone(),
            config,
            metrics,
            flows: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            ever_ran: std::sync::atomic::AtomicBool::new(false),
        };
        let stamp = stamp(&this.config.path);
        match this.build() {
            Ok((instance, _)) => {
                info!(wasm_module = %this.config.name, kind = this.config.kind.as_str(),
                    labels = ?instance.labels(), "loaded");
                this.install(instance, stamp);
            }
            Err(e) => {
                error!(
                    "{e}; flows pass as fail = \"{}\"",
                    fail_str(this.config.fail)
                );
                this.metrics.error(&this.config.name, e.reason, 1);
                let mut slot = this.lock();
                slot.down = Some((e.reason, e.message));
                slot.stamp = stamp;
            }
        }
        this
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn kind(&self) -> WasmKind {
        self.config.kind
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read, compile and start the file as it is now.
    fn build(&self) -> Result<(Instance, Duration), LoadError> {
        let started = Instant::now();
        let err = |(reason, message): (Reason, String)| LoadError {
            module: self.config.name.clone(),
            path: self.config.path.clone(),
            reason,
            message,
        };
        let bytes = std::fs::read(&self.config.path)
            .map_err(|e| err((Reason::Load, format!("cannot read the file: {e}"))))?;
        let module = compile(&self.engine, &bytes).map_err(err)?;
        let instance = Instance::start(&self.engine, &module, &self.config).map_err(err)?;
        Ok((instance, started.elapsed()))
    }

    fn install(&self, instance: Instance, stamp: Option<FileStamp>) {
        let mut slot = self.lock();
        if slot.labels != instance.labels() {
            slot.labels = instance.labels().to_vec();
            slot.cardinality =
                Cardinality::new(slot.labels.len(), self.config.max_label_values as usize);
        }
        slot.instance = Some(instance);
        slot.down = None;
        slot.stamp = stamp;
        slot.last_reload_error = None;
        self.ever_ran.store(true, Ordering::Relaxed);
    }

    /// Reload when the file changed since it was last tried. `Some(Ok(time))`
    /// after a swap, `Some(Err)` when the new version was refused (the old one
    /// keeps running), `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<Duration, LoadError>> {
        let now = stamp(&self.config.path);
        if now.is_none() || self.lock().stamp == now {
            return None;
        }
        let started = Instant::now();
        match self.build() {
            Ok((instance, _)) => {
                self.install(instance, now);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                let took = started.elapsed();
                info!(wasm_module = %self.config.name, ms = took.as_secs_f64() * 1e3, "reloaded");
                Some(Ok(took))
            }
            Err(e) => {
                let mut slot = self.lock();
                let running = slot.instance.is_some();
                warn!(
                    "{e}; {}",
                    if running {
                        "the previous version keeps running"
                    } else {
                        "the module stays down"
                    }
                );
                self.metrics.error(&self.config.name, e.reason, 1);
                slot.stamp = now;
                slot.last_reload_error = Some(format!("{}: {}", e.reason, e.message));
                Some(Err(e))
            }
        }
    }

    /// Quarantine after a failed call.
    fn quarantine(&self, slot: &mut Slot, e: CallError) {
        error!(
            wasm_module = %self.config.name, reason = %e.reason,
            "quarantined: {}; flows pass as fail = \"{}\" until the file changes",
            e.message, fail_str(self.config.fail)
        );
        self.metrics.error(&self.config.name, e.reason, 1);
        slot.instance = None;
        slot.down = Some((e.reason, e.message));
    }

    fn account(&self, flows: usize, started: Duration) {
        let took = thread_cpu_time().saturating_sub(started);
        self.flows.fetch_add(flows as u64, Ordering::Relaxed);
        self.cpu_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.metrics
            .call(&self.config.name, flows as u64, took.as_secs_f64());
    }

    /// Append one decision per flow to `keep` (a filter).
    pub fn filter(&self, flows: &[Flow], keep: &mut Vec<bool>) {
        let mut slot = self.lock();
        let before = keep.len();
        if let Some(instance) = slot.instance.as_mut() {
            let started = thread_cpu_time();
            let result = instance.filter(flows, keep);
            self.account(flows.len(), started);
            match result {
                Ok(()) => return,
                Err(e) => {
                    keep.truncate(before);
                    self.quarantine(&mut slot, e);
                }
            }
        }
        let pass = self.config.fail == FailMode::Open;
        keep.extend(std::iter::repeat_n(pass, flows.len()));
    }

    /// The declared label names (empty when it never loaded).
    pub fn labels(&self) -> Vec<String> {
        self.lock().labels.clone()
    }

    /// Append this labeller's `(name, value)` pairs to each flow's labels.
    pub fn label(&self, flows: &[Flow], out: &mut [Vec<(String, String)>]) {
        let mut guard = self.lock();
        let slot = &mut *guard;
        let names = slot.labels.clone();
        if names.is_empty() {
            return;
        }
        let mut values = vec![String::new(); flows.len() * names.len()];
        let mut capped = 0u64;
        let result = match slot.instance.as_mut() {
            Some(instance) => {
                let started = thread_cpu_time();
                let cardinality = &mut slot.cardinality;
                let r = instance.label(flows, |flow, label, value| {
                    let (admitted, over) = cardinality.admit(label, value);
                    capped += u64::from(over);
                    values[flow * names.len() + label] = admitted.to_string();
                });
                self.account(flows.len(), started);
                r
            }
            None => {
                let fill = match self.config.fail {
                    FailMode::Open => "",
                    FailMode::Closed => QUARANTINED_VALUE,
                };
                values.iter_mut().for_each(|v| *v = fill.to_string());
                Ok(())
            }
        };
        if capped > 0 {
            self.metrics
                .error(&self.config.name, Reason::Cardinality, capped);
        }
        if let Err(e) = result {
            self.quarantine(slot, e);
            values.iter_mut().for_each(|v| v.clear());
        }
        for (i, labels) in out.iter_mut().enumerate().take(flows.len()) {
            for (j, name) in names.iter().enumerate() {
                labels.push((
                    name.clone(),
                    std::mem::take(&mut values[i * names.len() + j]),
                ));
            }
        }
    }

    pub fn status(&self) -> ModuleStatus {
        let slot = self.lock();
        let (state, reason, message) = match (&slot.instance, &slot.down) {
            (Some(_), _) => ("running", None, None),
            (None, Some((r, m))) => (
                if self.ever_ran.load(Ordering::Relaxed) {
                    "quarantined"
                } else {
                    "failed"
                },
                Some(r.as_str().to_string()),
                Some(m.clone()),
            ),
            (None, None) => ("failed", None, None),
        };
        ModuleStatus {
            name: self.config.name.clone(),
            kind: self.config.kind.as_str(),
            path: self.config.path.display().to_string(),
            state,
            reason,
            message,
            fail: fail_str(self.config.fail),
            labels: slot.labels.clone(),
            flows: self.flows.load(Ordering::Relaxed),
            cpu_seconds: self.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9,
            reloads: self.reloads.load(Ordering::Relaxed),
            last_reload_error: slot.last_reload_error.clone(),
        }
    }
}

fn fail_str(mode: FailMode) -> &'static str {
    match mode {
        FailMode::Open => "open",
        FailMode::Closed => "closed",
    }
}
