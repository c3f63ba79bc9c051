//! All configured modules, in pipeline order, and the watcher that reloads
//! them when their files change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hubble_proto::flow::Flow;

use crate::config::{WasmKind, WasmModuleConfig};
use crate::engine::WasmEngine;
use crate::metrics::WasmMetrics;
use crate::module::{ModuleStatus, WasmModule};

/// How often module files are checked for changes by default.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The modules of `[[plugins.observe.wasm]]`.
pub struct WasmModules {
    // Modules hold the engine; it is dropped (stopping its epoch thread) last.
    modules: Vec<WasmModule>,
    engine: WasmEngine,
}

impl WasmModules {
    /// Load every module. Only an engine failure is an error: a module that
    /// does not load is reported and passes flows per its `fail` mode.
    pub fn load(
        configs: &[WasmModuleConfig],
        metrics: Arc<WasmMetrics>,
    ) -> Result<Self, wasmtime::Error> {
        let engine = WasmEngine::new()?;
        let modules = configs
            .iter()
            .map(|c| WasmModule::load(engine.engine(), c.clone(), metrics.clone()))
            .collect();
        Ok(Self { modules, engine })
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    pub fn engine(&self) -> &WasmEngine {
        &self.engine
    }

    pub fn modules(&self) -> &[WasmModule] {
        &self.modules
    }

    /// Whether each flow is kept by every filter (in order; a flow one filter
    /// drops is still shown to the next, batches stay whole).
    pub fn filter(&self, flows: &[Flow]) -> Vec<bool> {
        let mut keep = vec![true; flows.len()];
        let mut decisions = Vec::with_capacity(flows.len());
        for m in self.modules.iter().filter(|m| m.kind() == WasmKind::Filter) {
            decisions.clear();
            m.filter(flows, &mut decisions);
            for (k, d) in keep.iter_mut().zip(&decisions) {
                *k &= *d;
            }
        }
        keep
    }

    /// Whether any labeller is configured.
    pub fn has_labellers(&self) -> bool {
        self.modules.iter().any(|m| m.kind() == WasmKind::Labeller)
    }

    /// The labellers' labels for each flow, in module order.
    pub fn labels(&self, flows: &[Flow]) -> Vec<Vec<(String, String)>> {
        let mut out = vec![Vec::new(); flows.len()];
        for m in self
            .modules
            .iter()
            .filter(|m| m.kind() == WasmKind::Labeller)
        {
            m.label(flows, &mut out);
        }
        out
    }

    /// Reload every module whose file changed.
    pub fn reload_changed(&self) {
        for m in &self.modules {
            let _ = m.reload_if_changed();
        }
    }

    pub fn status(&self) -> Vec<ModuleStatus> {
        self.modules.iter().map(WasmModule::status).collect()
    }
}

/// A thread reloading changed modules every `interval`; stopped on drop.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn spawn(modules: Arc<WasmModules>, interval: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("porin-wasm-watch".to_string())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    modules.reload_changed();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
