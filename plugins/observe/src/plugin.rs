//! The observability plugin's lifecycle.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use porin_plugin_sdk::{DatapathContribution, Health, Plugin, PluginContext, PluginError, Switch};
use porin_wasm::{DEFAULT_WATCH_INTERVAL, WasmMetrics, WasmModules, Watcher};
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

use crate::ObserveConfig;
use crate::client::HubbleAddress;
use crate::grpc::HubbleService;
use crate::metrics::pod_series::{PodKey, PodSeries};
use crate::metrics::{HubbleMetrics, LostEvents, serve_metrics};
use crate::peer_source::{HUBBLE_ADDRESS_ANNOTATION, cluster_peers};
use crate::pipeline::{poll_kernel_losses, run_pipeline};
use crate::ring::FlowRing;
use crate::serve::{bind_unix, serve_tcp};
use crate::ui::{NoPolicyHints, UiConfig, UiListener};

/// The section name in `porin.toml`.
pub const NAME: &str = "observe";

/// The observe plugin: turns datapath events into flows, keeps the newest in a
/// ring and serves them with the Hubble API (unix socket, optionally TCP), and
/// counts them in Hubble metrics served on `metrics_address`.
#[derive(Default)]
pub struct ObservePlugin {
    config: ObserveConfig,
    health: Option<Health>,
    ring: Option<Arc<FlowRing>>,
    lost: Arc<LostEvents>,
    tasks: Vec<JoinHandle<()>>,
    /// Where this agent's Hubble API is reached, once started.
    address: Option<String>,
    wasm: Option<Arc<WasmModules>>,
    wasm_watcher: Option<Watcher>,
}

impl ObservePlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &ObserveConfig {
        &self.config
    }
}

impl ObservePlugin {
    /// Register the configured Hubble metrics (and the WASM modules' own) and
    /// serve them, when any are configured (as Cilium does: no `metrics`, no
    /// `:9965`).
    fn start_metrics(
        &mut self,
        runtime: &tokio::runtime::Handle,
        wasm_metrics: &mut WasmMetrics,
    ) -> Result<Option<Arc<HubbleMetrics>>, PluginError> {
        if self.config.metrics.is_empty() && self.config.wasm.is_empty() {
            return Ok(None);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = HubbleMetrics::register(&self.config.metrics, &mut registry)
            .map_err(|e| start_error(e.to_string()))?;
        *wasm_metrics = WasmMetrics::register(&mut registry);
        self.lost.register(&mut registry);
        let addr = self.config.metrics_address;
        let serving = {
            let _guard = runtime.enter();
            serve_metrics(addr, Arc::new(registry)).map_err(|e| start_error(e.to_string()))?
        };
        self.tasks.push(runtime.spawn(async move {
            if let Err(e) = serving.await {
                error!(plugin = NAME, error = %e, "Hubble metrics stopped");
            }
        }));
        Ok(Some(Arc::new(metrics)))
    }
}

impl ObservePlugin {
    /// Load the `[[plugins.observe.wasm]]` modules and watch their files. A
    /// module that does not load is reported (health, status, metric), not
    /// fatal.
    fn start_wasm(
        &mut self,
        metrics: WasmMetrics,
    ) -> Result<Option<Arc<WasmModules>>, PluginError> {
        if self.config.wasm.is_empty() {
            return Ok(None);
        }
        let modules = WasmModules::load(&self.config.wasm, Arc::new(metrics))
            .map_err(|e| start_error(format!("WebAssembly engine: {e}")))?;
        let modules = Arc::new(modules);
        let watcher = Watcher::spawn(modules.clone(), DEFAULT_WATCH_INTERVAL)
            .map_err(|e| start_error(format!("cannot watch WebAssembly modules: {e}")))?;
        self.wasm_watcher = Some(watcher);
        self.wasm = Some(modules.clone());
        Ok(Some(modules))
    }

    /// Why the plugin is degraded by its WASM modules, if it is.
    fn wasm_problems(&self) -> Option<String> {
        let problems: Vec<String> = self
            .wasm
            .as_ref()?
            .status()
            .into_iter()
            .filter(|s| s.state != "running")
            .map(|s| {
                format!(
                    "wasm module `{}` {}: {}",
                    s.name,
                    s.state,
                    s.reason.unwrap_or_default()
                )
            })
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// Removes the metric series of pods gone for `after`, looking every few seconds at the
/// pods the cluster state has (Pods and the addresses of pods on every node).
async fn sweep_pod_series(ctx: Arc<dyn PluginContext>, series: PodSeries, after: Duration) {
    let mut tick = tokio::time::interval(
        (after / 6).clamp(Duration::from_millis(500), Duration::from_secs(10)),
    );
    loop {
        tick.tick().await;
        if series.pods().is_empty() {
            continue;
        }
        let state = ctx.state();
        let mut existing: HashSet<PodKey> = state
            .pod_addresses()
            .into_iter()
            .map(|p| (p.namespace, p.pod_name))
            .collect();
        existing.extend(
            state
                .pods()
                .into_iter()
                .filter_map(|p| Some((p.metadata.namespace?, p.metadata.name?))),
        );
        let removed = series.sweep_after(&existing, Instant::now(), after);
        if removed > 0 {
            debug!(
                plugin = NAME,
                removed, "metric series of deleted pods removed"
            );
        }
    }
}

fn start_error(message: String) -> PluginError {
    PluginError::Start {
        plugin: NAME.to_string(),
        message,
    }
}

impl Plugin for ObservePlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.config = ObserveConfig::from_section(section)?;
        Ok(())
    }

    fn datapath(&self) -> DatapathContribution {
        DatapathContribution {
            switches: vec![Switch {
                name: "CFG_EMIT_EVENTS",
                value: 1,
            }],
            maps: vec![],
            devices: vec![],
        }
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        let ring = Arc::new(FlowRing::new(self.config.buffer_size as usize));
        let socket = self.config.socket_path_in(&ctx.run_dir());
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| start_error(format!("no async runtime: {e}")))?;
        let address = match &self.config.listen_address {
            Some(a) => a.clone(),
            None => format!("unix://{}", socket.display()),
        };
        let service = HubbleService::new(ring.clone(), ctx.node_name(), address.clone())
            .with_lost_events(self.lost.clone())
            .with_peers(cluster_peers(ctx.clone()));
        let mut wasm_metrics = WasmMetrics::default();
        let metrics = self.start_metrics(&runtime, &mut wasm_metrics)?;
        if let Some(m) = &metrics {
            let after = Duration::from_secs(self.config.deleted_pod_metrics_after_s);
            self.tasks
                .push(runtime.spawn(sweep_pod_series(ctx.clone(), m.pod_series(), after)));
        }
        let wasm = self.start_wasm(wasm_metrics)?;
        // Bind in start() so a bad socket path fails the plugin, not a log line.
        let serving = {
            let _guard = runtime.enter();
            bind_unix(&socket, service.clone()).map_err(|e| start_error(e.to_string()))?
        };
        self.tasks.push(runtime.spawn(run_pipeline(
            ctx.clone(),
            ring.clone(),
            self.lost.clone(),
            metrics,
            wasm,
        )));
        self.tasks
            .push(runtime.spawn(poll_kernel_losses(ctx.clone(), self.lost.clone())));
        self.tasks.push(runtime.spawn(async move {
            if let Err(e) = serving.await {
                error!(plugin = NAME, error = %e, "Hubble API stopped");
            }
        }));
        if let Some(listen) = self.config.listen_address.clone() {
            let tls = self.config.tls.clone();
            self.tasks.push(runtime.spawn(async move {
                if let Err(e) = serve_tcp(&listen, service, tls.as_ref()).await {
                    error!(plugin = NAME, error = %e, "Hubble API on TCP stopped");
                }
            }));
        }
        if let Some(ui) = &self.config.ui {
            let listener = UiListener::bind_std(&ui.listen)
                .and_then(|l| {
                    let _guard = runtime.enter();
                    l.into_tokio()
                })
                .map_err(|e| start_error(format!("[plugins.observe.ui] listen: {e}")))?;
            let config =
                UiConfig::new(HubbleAddress::Unix(socket.clone()), Arc::new(NoPolicyHints));
            self.tasks.push(runtime.spawn(async move {
                if let Err(e) = listener.serve(config).await {
                    error!(plugin = NAME, error = %e, "Flow UI stopped");
                }
            }));
        }
        self.ring = Some(ring);
        self.address = Some(address);
        info!(plugin = NAME, "started");
        self.health = Some(Health::Ok);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.wasm_watcher = None;
        self.wasm = None;
        self.ring = None;
        self.address = None;
        info!(plugin = NAME, "stopped");
        self.health = Some(Health::Stopped);
        Ok(())
    }

    /// Where this node's Hubble API listens, for other agents' Peer services.
    fn node_annotations(&self) -> BTreeMap<String, String> {
        self.address
            .iter()
            .map(|a| (HUBBLE_ADDRESS_ANNOTATION.to_string(), a.clone()))
            .collect()
    }

    fn health(&self) -> Health {
        match (self.health.clone(), self.wasm_problems()) {
            (Some(Health::Ok), Some(problem)) => Health::Degraded(problem),
            (health, _) => health.unwrap_or(Health::Starting),
        }
    }

    fn status_json(&self) -> Option<serde_json::Value> {
        let modules = self.wasm.as_ref().map(|w| w.status()).unwrap_or_default();
        Some(serde_json::json!({ "wasm": modules }))
    }
}
