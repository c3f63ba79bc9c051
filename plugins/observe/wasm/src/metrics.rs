//! The host's own metrics: errors, CPU time and flows per module.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::error::Reason;

type Labels = Vec<(String, String)>;

/// `porin_wasm_module_errors_total{module,reason}`,
/// `porin_wasm_module_cpu_seconds_total{module}`,
/// `porin_wasm_module_flows_total{module}`.
#[derive(Debug, Default)]
pub struct WasmMetrics {
    errors: Family<Labels, Counter>,
    cpu: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    flows: Family<Labels, Counter>,
}

impl WasmMetrics {
    /// Metrics registered into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "porin_wasm_module_errors",
            "Errors of WebAssembly modules on the flow pipeline, by reason",
            m.errors.clone(),
        );
        registry.register(
            "porin_wasm_module_cpu_seconds",
            "Time spent in WebAssembly modules' calls (marshalling included)",
            m.cpu.clone(),
        );
        registry.register(
            "porin_wasm_module_flows",
            "Flows handed to WebAssembly modules",
            m.flows.clone(),
        );
        m
    }

    pub fn error(&self, module: &str, reason: Reason, n: u64) {
        self.errors
            .get_or_create(&vec![
                ("module".to_string(), module.to_string()),
                ("reason".to_string(), reason.as_str().to_string()),
            ])
            .inc_by(n);
    }

    /// Errors counted for `module` and `reason` (tests, status).
    pub fn errors(&self, module: &str, reason: Reason) -> u64 {
        self.errors
            .get_or_create(&vec![
                ("module".to_string(), module.to_string()),
                ("reason".to_string(), reason.as_str().to_string()),
            ])
            .get()
    }

    pub fn call(&self, module: &str, flows: u64, seconds: f64) {
        let labels = vec![("module".to_string(), module.to_string())];
        self.flows.get_or_create(&labels).inc_by(flows);
        self.cpu.get_or_create(&labels).inc_by(seconds);
    }
}
